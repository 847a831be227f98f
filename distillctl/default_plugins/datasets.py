"""Built-in datasets (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from distillctl.hookspecs import Register, hookimpl


@hookimpl
def register_datasets(register: Register) -> None:
    pass
