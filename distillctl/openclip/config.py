"""Any open_clip model config, CLIP or CoCa, by open_clip name, JSON file or ``local-dir`` folder."""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

import open_clip

from distillctl.errors import ConfigError


def is_coca_config(cfg: Any) -> bool:
    """True for an open_clip model cfg that builds a CoCa (it has a ``multimodal_cfg``)."""
    return isinstance(cfg, dict) and "embed_dim" in cfg and all(
        isinstance(cfg.get(k), dict) for k in ("vision_cfg", "text_cfg", "multimodal_cfg"))


def looks_like_path(spec: str) -> bool:
    """A ``variant`` that names a file or folder rather than an open_clip model name."""
    return spec.endswith(".json") or "/" in spec or spec.startswith(".") or Path(spec).expanduser().is_dir()


def read_config_json(path: str | Path) -> tuple[Any, dict[str, Any], Path]:
    """A user's JSON config, not yet checked: a bare model cfg or ``{"model_cfg": ..., "preprocess_cfg": ...}``;
    a directory is read as an open_clip ``local-dir`` folder (its ``open_clip_config.json``).
    Returns ``(model_cfg, preprocess_overrides, file read)``."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "open_clip_config.json"
    if not p.is_file():
        raise ConfigError([f"config file not found: {p}"])
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{p}: not a readable JSON file ({exc})"]) from None
    preprocess: dict[str, Any] = {}
    if isinstance(data, dict) and "model_cfg" in data:
        preprocess = dict(data.get("preprocess_cfg") or {})
        data = data["model_cfg"]
    return data, preprocess, p


def open_clip_config(variant: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Any open_clip model config, CLIP or CoCa: ``(model_cfg, preprocess_overrides, model_name)``.

    ``variant`` is an open_clip model name (``ViT-B-32``), a JSON file (a bare model cfg or
    ``{"model_cfg": ..., "preprocess_cfg": ...}``) or a ``local-dir`` folder (``[local-dir:]DIR``).
    """
    spec = variant[len("local-dir:"):] if variant.startswith("local-dir:") else variant
    if not looks_like_path(spec):
        cfg = open_clip.get_model_config(spec)
        if cfg is None:
            names = open_clip.list_models()
            near = difflib.get_close_matches(spec, names, n=5, cutoff=0.6)
            coca = [n for n in names if is_coca_config(open_clip.get_model_config(n))]
            raise ConfigError([f"open_clip has no model config {spec!r}"
                               + (f" (did you mean: {', '.join(near)}?)" if near else "")
                               + f"; CoCa configs: {', '.join(coca)}; CLIP configs: ViT-B-32, ViT-B-16, ViT-L-14 and "
                               "more (open_clip.list_models())"])
        return copy.deepcopy(cfg), {}, spec
    data, preprocess, p = read_config_json(spec)
    if not isinstance(data, dict) or "embed_dim" not in data or not isinstance(data.get("vision_cfg"), dict):
        raise ConfigError([f"{p}: not an open_clip model config (needs embed_dim, vision_cfg and text_cfg)"])
    return data, preprocess, str(Path(spec).expanduser())


__all__ = ["is_coca_config", "looks_like_path", "open_clip_config", "read_config_json"]
