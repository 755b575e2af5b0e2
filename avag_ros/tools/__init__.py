"""Programs for people: the demo and its scene, and the sample player that streams files as a camera would."""
