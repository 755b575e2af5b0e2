"""`python -m avag_core.export`, whose command is avag_core.cli.export."""
import sys

from .cli.export import main

if __name__ == "__main__":
    sys.exit(main())
