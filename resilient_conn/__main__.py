"""``python -m resilient_conn`` runs the command line."""

import sys

from .cli import main

sys.exit(main())
