"""C{python -m hypertcp.cli}: the C{hypertcp} command."""

import sys

from hypertcp.cli.main import main

sys.exit(main())
