"""distillctl: module-wise adaptive layerwise distillation (OPTIMA) for multimodal models."""

from __future__ import annotations

from distillctl.errors import DistillctlError
from distillctl.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["DistillctlError", "__version__", "hookimpl"]
