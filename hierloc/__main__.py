"""Entry point: `python -m hierloc --help`."""

import sys

from hierloc.cli import main

if __name__ == "__main__":
    sys.exit(main())
