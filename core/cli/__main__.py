"""``python -m core.cli`` runs the ``torrent`` command."""

import sys

from .main import main

sys.exit(main())
