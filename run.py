#!/usr/bin/env python3
"""BIDS-App entry point: ``run.py bids_dir output_dir {participant,group} [options]``.

Runs in an isolated interpreter (no ``PYTHONPATH``, no user site): see ``ketabids/entry.py``.
"""

import sys

from ketabids.entry import main

if __name__ == "__main__":
    sys.exit(main())
