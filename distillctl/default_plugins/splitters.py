"""Built-in splitters (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from distillctl.hookspecs import Register, hookimpl


@hookimpl
def register_splitters(register: Register) -> None:
    pass
