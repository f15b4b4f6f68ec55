"""``python -m tl_advise.cli`` (the form torchrun and subprocesses use): the same as ``tl-advise``."""

import sys

from tl_advise.cli.commands import main

sys.exit(main())
