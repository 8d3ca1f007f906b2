"""`python -m dla ...`: the `dla` command, for trees used without installing (PYTHONPATH=src)."""

import sys

from dla.cli import main

sys.exit(main())
