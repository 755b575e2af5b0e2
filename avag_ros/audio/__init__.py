"""The node's sound: the audio sources and their ring buffer, PCM, and the sound events found in the stream."""
