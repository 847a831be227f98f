"""Built-in evaluators (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from distillctl.hookspecs import Register, hookimpl


@hookimpl
def register_evaluators(register: Register) -> None:
    pass
