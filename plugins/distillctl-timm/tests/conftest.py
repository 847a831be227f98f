"""Plugin tests see exactly the built-ins plus this plugin, whatever else is installed (llm / datasette habit)."""

from __future__ import annotations

from collections.abc import Iterator

import distillctl_timm
import pytest

from distillctl import plugins


@pytest.fixture(autouse=True)
def _timm_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")
    for var in ("DISTILLCTL_DISABLE_PLUGINS", "DISTILLCTL_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    distillctl_timm.distribution = "distillctl-timm"  # provenance of the in-process registration
    distillctl_timm.version = distillctl_timm.__version__
    plugins.reset_plugins(plugins.load_plugins(include_entry_points=False, extra=(distillctl_timm,)))
    try:
        yield
    finally:
        plugins.reset_plugins(None)


# a tiny hierarchical model: ConvNeXt-Atto's layout, narrower and shallower (random init, seconds on CPU)
CONVNEXT_OPTIONS = {"num_classes": 5, "img_size": 32, "classes": ["circle", "square", "triangle", "diamond", "star"],
                    "model_kwargs": {"depths": [2, 2, 2, 2], "dims": [16, 24, 32, 48]}}
