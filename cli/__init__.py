"""The ``tl-advise`` command line: the top layer, above the advisor and the runners.

``tl-advise DATA`` (or ``python -m tl_advise.cli DATA``) runs ``commands.main``.
"""

from tl_advise.cli.commands import cli, main
from tl_advise.cli.rank import rank_command

cli.add_command(rank_command)  # `tl-advise rank-backbones DATA --candidates A,B,C` (cli/rank.py)

__all__ = ["main"]
