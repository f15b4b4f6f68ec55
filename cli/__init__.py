"""The ``tl-advise`` command line: the top layer, above the advisor and the runners.

``tl-advise DATA`` (or ``python -m tl_advise.cli DATA``) runs ``commands.main``.
"""

from tl_advise.cli.commands import main

__all__ = ["main"]
