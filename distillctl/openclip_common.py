"""Moved to :mod:`distillctl.openclip` in 0.2 (``openclip.export`` and ``openclip.family``); kept so that
0.1 imports keep working. Nothing in distillctl imports this module."""

from distillctl.openclip.export import export_local_dir, image_text_dummy_inputs
from distillctl.openclip.family import OpenClipFamilyMixin

__all__ = ["OpenClipFamilyMixin", "export_local_dir", "image_text_dummy_inputs"]
