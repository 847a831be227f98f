"""Built-in policies (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from distillctl.hookspecs import Register, hookimpl


@hookimpl
def register_policies(register: Register) -> None:
    pass
