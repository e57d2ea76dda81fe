"""``python -m edgeds.deploy.device``: the device side of a deploy step (see :mod:`.cli`)."""

import sys

from .cli import main

sys.exit(main())
