"""The ROS 2 node around the avag_core predictor: the node and its per-frame pipeline here, and beside them audio/,
depth/, messages/, runtime/ and tools/, each holding what it names."""
