"""open_clip CLIP support (native ViT towers and timm towers): configs, teachers, the ``clip`` family and splitter.

Submodules import torch and open_clip at import time; ``distillctl.default_plugins`` imports them lazily.
"""
