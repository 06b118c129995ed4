"""`python -m hsmkms.cli`: the operator CLI."""

import sys

from hsmkms.cli import main

sys.exit(main())
