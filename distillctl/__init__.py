"""distillctl: module-wise adaptive layerwise distillation (OPTIMA) for multimodal models."""

from __future__ import annotations

from typing import Any

from distillctl.errors import DistillctlError

# the one place the version is written: pyproject.toml reads it from here ([tool.hatch.version])
__version__ = "0.2.0"

__all__ = ["PLUGIN_API", "DistillctlError", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    """``hookimpl`` and ``PLUGIN_API`` on first use: importing pluggy is left to what needs it (``--help`` does not)."""
    if name in ("hookimpl", "PLUGIN_API"):
        from distillctl import hookspecs

        return getattr(hookspecs, name)
    raise AttributeError(f"module 'distillctl' has no attribute {name!r}")
