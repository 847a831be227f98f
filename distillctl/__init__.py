"""distillctl: module-wise adaptive layerwise distillation (OPTIMA) for multimodal models."""

from __future__ import annotations

from distillctl.errors import DistillctlError
from distillctl.hookspecs import PLUGIN_API, hookimpl

# the one place the version is written: pyproject.toml reads it from here ([tool.hatch.version])
__version__ = "0.2.0"

__all__ = ["PLUGIN_API", "DistillctlError", "__version__", "hookimpl"]
