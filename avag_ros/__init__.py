"""ROS 2 side of avag_ros: nodes and message conversions around the avag_core predictor."""
