"""`python -m modc`: the same as the `modc` command."""

import sys

from modc.cli import main

sys.exit(main())
