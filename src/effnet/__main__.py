"""``python -m effnet`` runs the CLI."""

import sys

from effnet.cli import main

sys.exit(main())
