"""Moved to :mod:`distillctl.openclip.tags` (and :mod:`distillctl.hf_cache`) in 0.2; kept so that 0.1 imports keep
working. Nothing in distillctl imports this module."""

from distillctl.hf_cache import PROBE_TIMEOUT_S
from distillctl.openclip.tags import *  # noqa: F403
from distillctl.openclip.tags import __all__ as _names

__all__ = ["PROBE_TIMEOUT_S", *_names]
