"""Diagnoxix Notify: `python run.py` serves on port 7556; `python run.py --help` lists the rest."""

import sys

from diagnoxix.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
