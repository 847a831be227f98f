"""open_clip CoCa: configs, building (also on the meta device), teachers.

Tokenizer, transforms, weights and hashing are shared with the ``clip`` support (:mod:`distillctl.openclip`).

Everything here takes plain open_clip model configs (``embed_dim``, ``vision_cfg``, ``text_cfg``,
``multimodal_cfg``) so that a student's config can be written to ``open_clip_config.json`` and
rebuilt by open_clip unchanged.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import open_clip
import torch

from distillctl.errors import ConfigError, WeightsError
from distillctl.interfaces import Teacher
from distillctl.openclip.bundle import openclip_bundle
from distillctl.openclip.config import is_coca_config, looks_like_path, read_config_json
from distillctl.openclip.hashing import state_dict_hash
from distillctl.openclip.tokenizer import OpenClipTokenizer, make_tokenizer  # noqa: F401 - re-exported (0.1 names)
from distillctl.openclip.transforms import (
    make_transform,  # noqa: F401 - re-exported (0.1 name)
    preprocess_config,
)
from distillctl.torch_utils import check_device

# distillctl teacher name -> open_clip model name
BUILTIN_TEACHERS: dict[str, str] = {"coca-large": "coca_ViT-L-14", "coca-base": "coca_ViT-B-32"}
DEFAULT_TAG = "laion2b_s13b_b90k"
CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "multimodal_cfg")


# --------------------------------------------------------------------------- configs
def coca_model_names() -> list[str]:
    """open_clip's built-in CoCa configs."""
    return [n for n in open_clip.list_models() if is_coca_config(open_clip.get_model_config(n))]


def builtin_model_config(model_name: str) -> dict[str, Any]:
    """A deep copy of an open_clip built-in CoCa config (``custom_text: true`` kept)."""
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ConfigError(
            [f"open_clip has no model config {model_name!r} (CoCa configs: {', '.join(coca_model_names())})"]
        )
    if not is_coca_config(cfg):
        raise ConfigError(
            [
                f"open_clip model {model_name!r} is not a CoCa (no multimodal_cfg); distillctl's CoCa teachers need one of: "
                + ", ".join(coca_model_names())
            ]
        )
    return normalize_config(cfg)


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a user JSON config: a bare model cfg or ``{"model_cfg": ..., "preprocess_cfg": ...}``.

    A directory is read as an open_clip ``local-dir`` folder (its ``open_clip_config.json``).
    Returns ``(model_cfg, preprocess_overrides)``.
    """
    data, preprocess, p = read_config_json(path)
    if not is_coca_config(data):
        raise ConfigError(
            [
                f"{p}: not an open_clip CoCa config (needs embed_dim, vision_cfg, text_cfg and multimodal_cfg; "
                "CLIP and other non-CoCa configs are not supported)"
            ]
        )
    return normalize_config(data), preprocess


def normalize_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A deep copy with ``custom_text: true``: open_clip's factory (``local-dir:``, ``add_model_config``)
    builds a CoCa only when both ``custom_text`` and ``multimodal_cfg`` are set."""
    out = copy.deepcopy(cfg)
    out["custom_text"] = True
    return out


def config_problems(cfg: dict[str, Any]) -> list[str]:
    """What stops ``cfg`` from being a working CoCa (width constraints, output_tokens): messages."""
    problems = []
    if not is_coca_config(cfg):
        return ["not a CoCa config: needs embed_dim, vision_cfg, text_cfg and multimodal_cfg"]
    e = cfg["embed_dim"]
    tw = cfg["text_cfg"].get("width", 512)
    mw = cfg["multimodal_cfg"].get("width", 512)
    if not (tw == mw == e):
        problems.append(
            f"text_cfg.width ({tw}), multimodal_cfg.width ({mw}) and embed_dim ({e}) must be equal in open_clip CoCa "
            "(the decoder reads the text tower's tokens and the image pooler's outputs directly)"
        )
    for tower in ("vision_cfg", "text_cfg"):
        if not cfg[tower].get("output_tokens", False):
            problems.append(f"{tower}.output_tokens must be true for CoCa")
    tv = cfg["text_cfg"].get("vocab_size", 49408)
    mv = cfg["multimodal_cfg"].get("vocab_size", 49408)
    if tv != mv:
        problems.append(f"text_cfg.vocab_size ({tv}) and multimodal_cfg.vocab_size ({mv}) must be equal")
    return problems


def tiny_config(
    *,
    vision_layers: int = 4,
    text_layers: int = 4,
    decoder_layers: int = 4,
    vision_width: int = 96,
    embed_dim: int = 64,
    heads: int = 2,
    image_size: int = 64,
    patch_size: int = 16,
    context_length: int = 32,
    queries: int = 16,
    vocab_size: int = 49408,
) -> dict[str, Any]:
    """A tiny CoCa config (tests, examples): builds in ~60 ms. Keep vision width != embed_dim (see OPEN_CLIP.md)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": patch_size,
            "layers": vision_layers,
            "width": vision_width,
            "head_width": vision_width // heads,
            "attentional_pool": True,
            "attn_pooler_queries": queries,
            "attn_pooler_heads": heads,
            "output_tokens": True,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": vocab_size,
            "width": embed_dim,
            "heads": heads,
            "layers": text_layers,
            "embed_cls": True,
            "output_tokens": True,
        },
        "multimodal_cfg": {
            "context_length": context_length,
            "vocab_size": vocab_size,
            "width": embed_dim,
            "heads": heads,
            "layers": decoder_layers,
        },
        "custom_text": True,
    }


# --------------------------------------------------------------------------- building
def build_coca(cfg: dict[str, Any], device: str | torch.device = "cpu", *, init_decoder: bool = True) -> torch.nn.Module:
    """Instantiate ``open_clip.CoCa`` from a model cfg on ``device`` (``"meta"``: no memory, no init cost).

    Random-init models get their decoder ``text_projection`` initialised (open_clip leaves it ``torch.empty``).
    """
    kwargs = copy.deepcopy(cfg)
    kwargs.pop("custom_text", None)
    try:
        with torch.device(device):
            model = open_clip.CoCa(**kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise ConfigError([f"open_clip cannot build this CoCa config: {type(exc).__name__}: {exc}"]) from None
    if init_decoder and torch.device(device).type != "meta":
        init_decoder_projection(model)
    return model


@torch.no_grad()
def init_decoder_projection(model: torch.nn.Module) -> None:
    """``normal_(text_decoder.text_projection, std=width**-0.5)``: open_clip never initialises it."""
    dec = model.text_decoder
    torch.nn.init.normal_(dec.text_projection, std=dec.width**-0.5)


# --------------------------------------------------------------------------- teachers
def teacher_model_config(name: str, variant: str | None = None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Architecture of a teacher without reading weights: ``(model_cfg, preprocess_overrides, model_name)``.

    ``name`` is ``coca-large``/``coca-base``, or ``open-clip`` with ``variant`` an open_clip model name,
    a JSON config path or a ``local-dir`` folder.
    """
    if name in BUILTIN_TEACHERS:
        model_name = BUILTIN_TEACHERS[name]
        return builtin_model_config(model_name), {}, model_name
    if variant is None:
        raise ConfigError([f"unknown CoCa teacher {name!r} (built-ins: {', '.join(BUILTIN_TEACHERS)}, open-clip:NAME)"])
    spec = variant[len("local-dir:"):] if variant.startswith("local-dir:") else variant
    if looks_like_path(spec):
        cfg, pre = read_config_file(spec)
        return cfg, pre, str(Path(spec).expanduser())
    return builtin_model_config(variant), {}, variant


def make_teacher(
    name: str,
    model: torch.nn.Module,
    model_cfg: dict[str, Any],
    preprocess: dict[str, Any],
    *,
    weights: str,
    weights_hash: str,
    tokenizer: Any = None,
    tokenizer_config: dict[str, Any] | None = None,
    model_name: str | None = None,
    device: str | torch.device = "cpu",
) -> Teacher:
    """Bundle a built CoCa into a :class:`Teacher` (family and splitter ``coca``): on ``device``, eval mode, frozen."""
    return openclip_bundle(name, model, normalize_config(model_cfg), preprocess, family="coca", splitter="coca",
                           weights=weights, weights_hash=weights_hash, tokenizer=tokenizer,
                           tokenizer_config=tokenizer_config, model_name=model_name, device=device)


def load_coca_teacher(
    name: str, *, variant: str | None = None, weights: str | None = None, device: str = "cpu"
) -> Teacher:
    """Build a CoCa teacher and load its weights (see :mod:`distillctl.openclip.weights` for ``weights``).

    ``device="meta"`` builds the architecture only: no weights are read (``distillctl inspect``).
    """
    from distillctl.openclip import weights as W

    cfg, pre_over, model_name = teacher_model_config(name, variant)
    full_name = f"{name}:{variant}" if variant is not None else name
    check_device(device)
    if torch.device(device).type == "meta":
        model = build_coca(cfg, "meta")
        return make_teacher(full_name, model, cfg, preprocess_config(cfg, pre_over), weights="(not loaded: meta)",
                            weights_hash="", model_name=model_name, device="meta")

    if weights is None:
        weights = W.default_weights(name, model_name)
        if weights is None:
            raise WeightsError(
                f"teacher {full_name!r} has no default weights; pass --teacher-weights PATH, local-dir:DIR "
                "or 'random' (random init, only when asked for explicitly)."
            )
    # 1. find the weights (fast failure before the model is built)
    src = W.resolve_weights(weights, model_name=model_name)
    if src.model_cfg is not None:  # local-dir: the folder's config must describe this architecture
        W.check_same_architecture(cfg, src.model_cfg, teacher=full_name, weights=weights)
    pre = preprocess_config(cfg, {**pre_over, **src.preprocess})
    # 2. build, 3. load
    model = build_coca(cfg, "cpu")
    if src.path is None:
        digest = state_dict_hash(model)
    else:
        W.load_weights_into(model, src.path, what=weights)
        digest = W.file_sha256(src.path)
    return make_teacher(full_name, model, cfg, pre, weights=src.description, weights_hash=digest,
                        model_name=model_name, device=device)


def random_teacher(
    model_cfg: dict[str, Any],
    *,
    name: str = "random",
    tokenizer: Any = None,
    tokenizer_config: dict[str, Any] | None = None,
    seed: int | None = None,
    device: str = "cpu",
) -> Teacher:
    """A random-init CoCa teacher from a model cfg (tests, plugins); pass ``tokenizer`` for a vocab < 49408."""
    if seed is not None:
        torch.manual_seed(seed)
    model = build_coca(model_cfg, "cpu")
    return make_teacher(name, model, model_cfg, preprocess_config(model_cfg), weights="random",
                        weights_hash=state_dict_hash(model), tokenizer=tokenizer,
                        tokenizer_config=tokenizer_config, device=device)
