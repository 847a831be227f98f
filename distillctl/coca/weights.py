"""Moved to :mod:`distillctl.openclip.weights` in 0.2; kept so that 0.1 imports keep working. Nothing in
distillctl imports this module."""

from distillctl.openclip.weights import *  # noqa: F403
from distillctl.openclip.weights import __all__  # noqa: F401
