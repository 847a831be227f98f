"""open_clip CLIP: configs, building (also on the meta device), teachers (``open-clip:NAME``, ``clip-tiny``).

Everything here takes plain open_clip model configs (``embed_dim``, ``vision_cfg``, ``text_cfg``, and
optionally ``custom_text``, ``quick_gelu``, ``init_logit_bias``) so that a student's config is written to
``open_clip_config.json`` and rebuilt by ``open_clip.create_model_and_transforms("local-dir:OUT")``
unchanged. ``custom_text: true`` builds a ``CustomTextCLIP`` (text tower under ``text.``), otherwise a
``CLIP`` (text tower at the top level: ``transformer``, ``token_embedding``, ``ln_final`` ...), exactly as
open_clip's factory does. Vision towers are open_clip's ViT or a timm model (``vision_cfg.timm_model_name``).

Tokenizer, transforms, configs by name or path, weights resolution and hashing are shared with the CoCa
support (:mod:`distillctl.openclip`); this package imports nothing of :mod:`distillctl.coca`.
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
from distillctl.openclip.config import open_clip_config  # noqa: F401 - re-exported (0.1 name)
from distillctl.openclip.hashing import state_dict_hash
from distillctl.openclip.transforms import preprocess_config
from distillctl.torch_utils import check_device

TINY_TEACHER = "clip-tiny"
TINY_SEED = 0  # clip-tiny's random init: the same teacher on every machine
# preferred default tags (real weights, GELU); otherwise the first tag without quick_gelu
PREFERRED_TAGS = ("laion2b_s34b_b79k", "laion2b_s34b_b88k", "laion2b_s32b_b79k", "laion2b_s32b_b82k", "datacomp_xl_s13b_b90k")


# --------------------------------------------------------------------------- configs
def is_clip_config(cfg: Any) -> bool:
    """True for an open_clip model cfg that builds a (CustomText)CLIP: ``embed_dim``, ``vision_cfg``,
    ``text_cfg`` and no ``multimodal_cfg`` (that one is a CoCa)."""
    return (isinstance(cfg, dict) and "embed_dim" in cfg and isinstance(cfg.get("vision_cfg"), dict)
            and isinstance(cfg.get("text_cfg"), dict) and "multimodal_cfg" not in cfg)


def is_timm_tower(cfg: dict[str, Any]) -> bool:
    """The vision tower is a timm model (``vision_cfg.timm_model_name``)."""
    return bool(cfg.get("vision_cfg", {}).get("timm_model_name"))


def config_problems(cfg: dict[str, Any]) -> list[str]:
    """What stops ``cfg`` from being a CLIP that distillctl can distill: messages (empty = fine)."""
    if not is_clip_config(cfg):
        return ["not an open_clip CLIP config: needs embed_dim, vision_cfg and text_cfg (and no multimodal_cfg)"]
    problems = []
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    if not v.get("timm_model_name") and isinstance(v.get("layers"), (list, tuple)):
        problems.append("vision_cfg.layers is a list: ResNet (ModifiedResNet) vision towers have no token blocks; "
                        "the clip family supports ViT towers (open_clip or timm)")
    if t.get("hf_model_name"):
        problems.append(f"text_cfg.hf_model_name={t['hf_model_name']!r}: Hugging Face text towers are not supported "
                        "(open_clip's own text transformer only)")
    return problems


def tiny_config(
    *,
    vision_layers: int = 4,
    text_layers: int = 4,
    vision_width: int = 96,
    embed_dim: int = 64,
    heads: int = 2,
    image_size: int = 64,
    patch_size: int = 16,
    context_length: int = 32,
    vocab_size: int = 49408,
) -> dict[str, Any]:
    """A tiny CLIP config (tests, ``clip-tiny``): 3.9M parameters, builds in ~0.2 s, open_clip's tokenizer."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "layers": vision_layers,
                       "width": vision_width, "head_width": vision_width // heads},
        "text_cfg": {"context_length": context_length, "vocab_size": vocab_size, "width": embed_dim,
                     "heads": heads, "layers": text_layers},
    }


# --------------------------------------------------------------------------- building
def build_clip(cfg: dict[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    """Instantiate ``open_clip.CLIP`` (or ``CustomTextCLIP`` for ``custom_text: true``) with dict outputs.

    ``device="meta"`` builds the architecture without memory or init cost. Bad configs are one ConfigError.
    """
    problems = config_problems(cfg)
    if problems:
        raise ConfigError([f"clip model config: {p}" for p in problems])
    kwargs = copy.deepcopy(cfg)
    custom_text = bool(kwargs.pop("custom_text", False))
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    try:
        with torch.device(device):
            model = cls(**kwargs, output_dict=True)  # dict outputs: image/text_features, logit_scale (+ logit_bias)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as exc:
        raise ConfigError([f"open_clip cannot build this CLIP config: {type(exc).__name__}: {' '.join(str(exc).split())}"]) from None
    return model


# --------------------------------------------------------------------------- teachers
def default_weights(model_name: str) -> str | None:
    """The weights of ``open-clip:NAME`` when ``--teacher-weights`` is not given: a local-dir's own file,
    else a preferred LAION tag, else the first tag that needs no QuickGELU, else the first tag."""
    from distillctl.openclip.weights import find_checkpoint_in_dir

    p = Path(model_name)
    if p.is_dir() and find_checkpoint_in_dir(p) is not None:
        return f"local-dir:{p}"
    if model_name not in open_clip.list_models():
        return None
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    for tag in PREFERRED_TAGS:
        if tag in tags:
            return tag
    plain = [t for t in tags if not open_clip.get_pretrained_cfg(model_name, t).get("quick_gelu", False)]
    return (plain or tags or [None])[0]


def _tag_quick_gelu(model_name: str, weights: str) -> bool:
    """open_clip tags trained with QuickGELU (OpenAI, LAION-400M ...) need ``quick_gelu: true`` in the cfg."""
    if model_name not in open_clip.list_models():
        return False
    pcfg = open_clip.get_pretrained_cfg(model_name, weights) or {}
    return bool(pcfg.get("quick_gelu", False))


def make_clip_bundle(
    name: str, model: torch.nn.Module, model_cfg: dict[str, Any], preprocess: dict[str, Any], *,
    weights: str, weights_hash: str, model_name: str | None = None, device: str | torch.device = "cpu",
) -> Teacher:
    """Bundle a built CLIP into a :class:`Teacher` (family and splitter ``clip``): on ``device``, eval mode, frozen."""
    return openclip_bundle(name, model, model_cfg, preprocess, family="clip", splitter="clip", weights=weights,
                           weights_hash=weights_hash, model_name=model_name, device=device)


def load_clip_teacher(
    name: str, cfg: dict[str, Any], pre_over: dict[str, Any], model_name: str, *,
    weights: str | None = None, device: str = "cpu", default: str | None = None,
) -> Teacher:
    """Build a CLIP teacher from ``cfg`` and load its weights (:mod:`distillctl.openclip.weights` rules:
    a file, ``local-dir:DIR``, a pretrained tag via the HF cache, or ``random``).

    ``device="meta"`` builds the architecture only (``distillctl inspect``). ``default`` is the weights
    used when none are given (None: the model's default tag, else the user must say).
    """
    from distillctl.openclip import weights as W

    check_device(device)
    problems = config_problems(cfg)
    if problems:
        raise ConfigError([f"teacher {name}: {p}" for p in problems])
    if torch.device(device).type == "meta":
        return make_clip_bundle(name, build_clip(cfg, "meta"), cfg, preprocess_config(cfg, pre_over),
                                weights="(not loaded: meta)", weights_hash="", model_name=model_name, device="meta")
    if weights is None:
        weights = default or default_weights(model_name)
        if weights is None:
            raise WeightsError(
                f"teacher {name!r} has no default weights; pass --teacher-weights PATH, local-dir:DIR "
                "or 'random' (random init, only when asked for explicitly)."
            )
    # 1. find the weights (fast failure before the model is built)
    src = W.resolve_weights(weights, model_name=model_name)
    if src.model_cfg is not None:  # local-dir: the folder's config must describe this architecture
        W.check_same_architecture(cfg, src.model_cfg, teacher=name, weights=weights)
    if src.path is not None and _tag_quick_gelu(model_name, weights):
        cfg = {**cfg, "quick_gelu": True}  # the tag was trained with QuickGELU: the activation is part of the model
    pre = preprocess_config(cfg, {**pre_over, **src.preprocess})
    # 2. build, 3. load
    model = build_clip(cfg, "cpu")
    if src.path is None:
        digest = state_dict_hash(model)
    else:
        W.load_weights_into(model, src.path, what=weights)
        digest = W.file_sha256(src.path)
    return make_clip_bundle(name, model, cfg, pre, weights=src.description, weights_hash=digest,
                            model_name=model_name, device=device)


def load_open_clip_clip(variant: str, *, weights: str | None = None, device: str = "cpu") -> Teacher:
    """``open-clip:NAME|CONFIG.json|DIR`` for a CLIP config (the built-in ``open-clip:`` teacher sends CoCa
    configs to :func:`distillctl.coca.models.load_coca_teacher`)."""
    cfg, pre_over, model_name = open_clip_config(variant)
    if not is_clip_config(cfg):
        raise ConfigError([f"open-clip:{variant}: not a CLIP or CoCa config (needs embed_dim, vision_cfg and text_cfg)"])
    return load_clip_teacher(f"open-clip:{variant}", cfg, pre_over, model_name, weights=weights, device=device)


def load_tiny_teacher(weights: str | None = None, device: str = "cpu") -> Teacher:
    """``clip-tiny``: a random-init tiny CLIP (fixed seed, 64 px, open_clip tokenizer at 32 tokens).

    Default weights ``random`` (seeded: the same teacher everywhere, without touching the global RNG);
    a file or ``local-dir:DIR`` of the same architecture also loads.
    """
    cfg = tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        return load_clip_teacher(TINY_TEACHER, cfg, {}, TINY_TEACHER, weights=weights, device=device, default="random")


def random_clip_teacher(model_cfg: dict[str, Any], *, name: str = "random", seed: int | None = None,
                        device: str = "cpu") -> Teacher:
    """A random-init CLIP teacher from a model cfg (tests, plugins)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = build_clip(model_cfg, "cpu")
    return make_clip_bundle(name, model, model_cfg, preprocess_config(model_cfg), weights="random",
                            weights_hash=state_dict_hash(model), model_name=name, device=device)


__all__ = ["build_clip", "config_problems", "default_weights", "is_clip_config", "is_timm_tower",
           "load_clip_teacher", "load_open_clip_clip", "load_tiny_teacher", "open_clip_config", "random_clip_teacher",
           "tiny_config"]
