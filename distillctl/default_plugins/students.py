"""Built-in students (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from distillctl.hookspecs import Register, hookimpl


@hookimpl
def register_students(register: Register) -> None:
    pass
