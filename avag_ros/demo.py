"""`python -m avag_ros.demo`, whose program is avag_ros.tools.demo."""
import sys

from .tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
