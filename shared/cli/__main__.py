"""``python -m shared.cli``: the operator commands."""

import sys

from shared.cli import main

sys.exit(main())
