"""`python -m refresher` is `token-refresher`."""

import sys

from .cli import main

sys.exit(main())
