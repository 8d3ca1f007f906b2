"""`python -m dla.cli ...` (how torchrun and accelerate launch the `dla` command): the same as `dla ...`."""

import sys

from dla.cli import main

sys.exit(main())
