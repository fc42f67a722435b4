"""`python -m instructify <command>`: the same as the `instructify` command."""

import sys

from instructify.cli import main

sys.exit(main())
