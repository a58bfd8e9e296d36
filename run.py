#!/usr/bin/env python3
"""Entry point: `python run.py serve`, `python run.py migrate`, ... (see `python run.py --help`)."""
import sys

from vibe.cli import main

if __name__ == "__main__":
    sys.exit(main())
