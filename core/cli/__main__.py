"""``python -m vipsense.cli``: the same as the ``vipsense`` command."""

import sys

from . import main

sys.exit(main())
