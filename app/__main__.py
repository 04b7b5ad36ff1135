"""`python -m app ...` is the `vision` command."""

import sys

from app.cli import main

sys.exit(main())
