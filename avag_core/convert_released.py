"""`python -m avag_core.convert_released`, whose command is avag_core.cli.convert_released."""
import sys

from .cli.convert_released import main

if __name__ == "__main__":
    sys.exit(main())
