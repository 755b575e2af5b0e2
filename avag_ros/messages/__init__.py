"""numpy <-> ROS messages: camera frames, masks, depth, 3D targets and the one grounding message; nothing publishes."""
