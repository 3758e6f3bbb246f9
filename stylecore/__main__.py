"""``python -m stylecore`` is the ``stylecore`` command."""

import sys

from stylecore.cli.main import main

sys.exit(main())
