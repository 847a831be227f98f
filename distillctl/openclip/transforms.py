"""open_clip preprocess configs and eval image transforms (PIL -> ``[3, H, W]`` float)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict


def preprocess_config(model_cfg: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """open_clip's default preprocess cfg, the model's image size, then ``overrides`` (mean, std, ...)."""
    base = asdict(PreprocessCfg())
    if overrides:
        base = merge_preprocess_dict(base, overrides)
    size = model_cfg.get("vision_cfg", {}).get("image_size", base["size"])
    base["size"] = list(size) if isinstance(size, (list, tuple)) else size
    for key in ("mean", "std"):
        if isinstance(base.get(key), tuple):
            base[key] = list(base[key])
    return base


def make_transform(preprocess: dict[str, Any]):
    """open_clip's eval image transform (PIL -> [3, H, W] float) for a preprocess cfg."""
    cfg = dict(preprocess)
    for key in ("mean", "std", "size"):
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    known = set(asdict(PreprocessCfg()))
    return image_transform_v2(PreprocessCfg(**{k: v for k, v in cfg.items() if k in known}), is_train=False)


__all__ = ["make_transform", "preprocess_config"]
