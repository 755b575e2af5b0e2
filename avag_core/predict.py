"""`python -m avag_core.predict`, whose command is avag_core.cli.predict."""
import sys

from .cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
