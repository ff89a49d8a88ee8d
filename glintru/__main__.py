"""``python -m glintru ...``: the same command line as ``glintru ...``."""

import sys

from glintru.cli import main

sys.exit(main())
