"""Shared CLI helpers: consoles, JSON output and the error boundary.

Everything here imports only typer / rich: ``distillctl --help`` must never import torch.
"""

import json
import os
import sys
from typing import Any

from distillctl.errors import ConfigError, DistillctlError
from distillctl.errors import debug_enabled as debug_enabled  # re-exported: one definition, in errors.py
from distillctl.terminal import console as console  # re-exported: one definition, in terminal.py


def echo_json(doc: Any) -> None:
    """Plain JSON on stdout for scripts (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def error_lines(exc: DistillctlError) -> list[str]:
    """The text the boundary prints: one line, or a header plus one line per config problem."""
    if isinstance(exc, ConfigError):
        where = f"{exc.source}: " if getattr(exc, "source", None) else ""
        count = len(exc.problems)
        head = f"error: {where}invalid config ({count} problem{'s' if count != 1 else ''}):"
        return [head, *(f"  {' '.join(p.split())}" for p in exc.problems)]
    return [f"error: {exc}"]


def report_error(exc: DistillctlError) -> int:
    """Print ``exc`` in red on stderr (never wrapped, never parsed as markup); return its exit code."""
    err = console(stderr=True)
    lines = error_lines(exc)
    if _world_size() > 1:  # under torchrun: say which rank failed (torchrun then ends the others)
        lines[0] = lines[0].replace("error: ", f"error: rank {os.environ.get('RANK', '?')}: ", 1)
    for line in lines:
        err.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
    return exc.exit_code


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1
