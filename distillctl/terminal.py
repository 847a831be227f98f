"""The rich console every terminal view uses (the CLI and :mod:`distillctl.report`).

Imports only rich, and only when called: ``distillctl --help`` must never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


def console(*, stderr: bool = False) -> Console:
    """A rich console bound to the *current* stdout/stderr (so CliRunner captures it).

    When the stream is not a terminal (a log, a pipe, CI), lines of text are not wrapped at rich's
    80-column default (``soft_wrap``): a ``--quiet`` line stays one line for ``grep``. Tables still
    fit the width (``COLUMNS``, else 80), so they stay readable.
    """
    from rich.console import Console

    con = Console(stderr=stderr, highlight=False)
    if not con.is_terminal:
        con.soft_wrap = True
    return con
