"""``python -m bascule.cli``: the same as the ``bascule`` console script."""

import sys

from bascule.cli import main

sys.exit(main())
