"""Presets of distillctl-timm (TOML files), found through the ``distillctl.presets`` entry-point group."""
