"""``python -m quality``: see :mod:`quality.run`."""

import sys

from .run import main

sys.exit(main())
