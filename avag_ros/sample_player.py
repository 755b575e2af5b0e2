"""`python -m avag_ros.sample_player` (and `ros2 run avag_ros sample_player`), whose program is
avag_ros.tools.sample_player."""
import sys

from .tools.sample_player import main

if __name__ == "__main__":
    sys.exit(main())
