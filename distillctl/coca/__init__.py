"""open_clip CoCa support: teachers, weights, the ``coca`` splitter and students.

Submodules import torch and open_clip at import time; ``distillctl.default_plugins`` imports them lazily.
"""
