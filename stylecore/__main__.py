"""``python -m stylecore`` is the ``stylecore`` command."""

import sys

from .cli import main

sys.exit(main())
