"""`python -m bot`: the terminal CLI, the same program as `rollbot`."""

import sys

from bot.terminal.cli import main

sys.exit(main())
