"""timm models as plain-data configs, their transforms, and the ``timm:<name>`` / bundled teachers.

A model config is JSON data::

    {"model_name": "vit_tiny_patch16_224",          # any timm.list_models() name
     "kwargs": {"img_size": 32, "depth": 6, ...},   # timm.create_model keyword arguments
     "classes": ["circle", ...] or null,            # class names, index order (labels -> targets)
     "block_groups": [2, 2, 2]}                      # plain ViTs: blocks per module (early/middle/late)

:func:`build_model` is ``timm.create_model(model_name, pretrained=False, **kwargs)`` plus the two
facts distillctl keeps on the module (``distillctl_classes``, ``distillctl_block_groups``), so that
the family's forward and the splitter see them wherever the model goes (teacher, student, export).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillctl.errors import DistillctlError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from distillctl.interfaces import Teacher

BUNDLED_FILE = Path(__file__).with_name("teacher.safetensors")
BUNDLED_NAME = "timm-shapes-vit"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")

# The bundled teacher: a timm ViT-Tiny shrunk to 32 px shapes (patch 8 -> 4x4 tokens + CLS).
BUNDLED_CONFIG: dict[str, Any] = {
    "model_name": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 6, "num_heads": 2, "mlp_ratio": 2.0,
               "num_classes": 5, "global_pool": "avg"},
    "classes": ["circle", "square", "triangle", "diamond", "star"],
    "block_groups": [2, 2, 2],
}
BUNDLED_PREPROCESS: dict[str, Any] = {"type": "simple", "size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def normalize_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A deep copy with every key present; a config that is not one is one DistillctlError line."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_name"), str):
        raise DistillctlError(f"not a timm model config (needs a 'model_name' string): {str(cfg)[:120]}")
    out = copy.deepcopy(cfg)
    out.setdefault("kwargs", {})
    out.setdefault("classes", None)
    out.setdefault("block_groups", None)
    out.setdefault("img_size", None)  # input size of a model whose constructor takes none (ConvNeXt, ResNet)
    return out


def build_model(cfg: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
    """A fresh (random-init) timm model from a config (never downloads)."""
    import contextlib

    import timm
    import torch

    cfg = normalize_config(cfg)
    where = torch.device("meta") if str(device) == "meta" else contextlib.nullcontext()  # meta: no memory, no init cost
    try:
        with where:
            model = timm.create_model(cfg["model_name"], pretrained=False, **cfg["kwargs"])
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            from distillctl.registry import did_you_mean

            name = cfg["model_name"]
            did = did_you_mean(name, timm.list_models(f"*{name.split('_')[0]}*") or timm.list_models())
            raise DistillctlError(f"unknown timm model {name!r}.{did} (see timm.list_models()).") from None
        raise DistillctlError(f"timm cannot build {cfg['model_name']} with {cfg['kwargs']}: {exc}") from None
    except TypeError as exc:
        raise DistillctlError(f"timm cannot build {cfg['model_name']} with {cfg['kwargs']}: {exc}") from None
    model.distillctl_classes = tuple(cfg["classes"]) if cfg["classes"] else None
    model.distillctl_block_groups = tuple(int(g) for g in cfg["block_groups"]) if cfg["block_groups"] else None
    model.distillctl_img_size = int(cfg["img_size"]) if cfg.get("img_size") else None
    return model.to(device)


# --------------------------------------------------------------------------- transforms
class SimpleTransform:
    """PIL -> ``[3, S, S]`` tensor: RGB, resize to ``size`` when it differs, ``(x - mean) / std``. Picklable."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size, self.mean, self.std = int(size), tuple(mean), tuple(std)

    def __call__(self, image: Any) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import Image

        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)


def make_transform(preprocess: dict[str, Any]) -> Any:
    """The eval transform of a preprocess config: ``simple`` (ours) or timm's ``create_transform``."""
    if preprocess.get("type") == "simple":
        return SimpleTransform(preprocess["size"], preprocess["mean"], preprocess["std"])
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return create_transform(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in preprocess.items() if k in keys})


def timm_preprocess(model: torch.nn.Module) -> dict[str, Any]:
    """timm's own data config of a model (``resolve_model_data_config``), as JSON data."""
    from timm.data import resolve_model_data_config

    from distillctl_timm.splitter import input_size

    cfg = dict(resolve_model_data_config(model))
    cfg["input_size"] = input_size(model)  # a ViT built for another img_size than its pretrained config
    return {"type": "timm", **{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}}


# --------------------------------------------------------------------------- weights
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only``); a bad file is one line."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "module"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is bad input
        raise WeightsError(f"cannot read teacher weights {path} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}).") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict.")
    return state


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (first: {k} {list(state[k].shape)} vs {list(own[k].shape)})")
        raise WeightsError(f"weights {what} do not fit {type(model).__name__}: {'; '.join(parts)} keys.",
                           hint="Pass the model's own options (e.g. teacher.num_classes) or the right file.")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)


# --------------------------------------------------------------------------- pretrained tags (offline rules)
def hf_repo_of(model_name: str, tag: str | None) -> tuple[str, str | None]:
    """``(full name, hf_hub_id)`` of a timm pretrained tag (None: timm's default tag); no torch import."""
    from timm.models import get_pretrained_cfg

    full = f"{model_name}.{tag}" if tag else model_name
    try:
        cfg = get_pretrained_cfg(full, allow_unregistered=False)
    except RuntimeError:  # timm: "Invalid pretrained tag (x) for arch"
        cfg = None
    if cfg is None:
        raise WeightsError(f"timm has no pretrained tag {full!r}.",
                           hint="See timm.list_pretrained('" + model_name + "*'), or use --teacher-weights FILE or random.")
    return full, getattr(cfg, "hf_hub_id", None)


def tag_cached(repo_id: str) -> bool:
    from distillctl.hf_cache import cached, hf_cache_dir

    return cached(repo_id, hf_cache_dir(), WEIGHT_FILES)


def check_tag(model_name: str, tag: str | None) -> None:
    """The CoCa teachers' offline rule: a tag that is not cached while the hub cannot be reached fails in one line."""
    from distillctl.hf_cache import hf_cache_dir, hub_reachable, offline

    full, repo = hf_repo_of(model_name, tag)
    if repo is None or tag_cached(repo):
        return
    why = "HF_HUB_OFFLINE is set" if offline() else ("the hub is unreachable" if not hub_reachable() else None)
    if why is not None:
        raise WeightsError(
            f"--teacher-weights {tag or 'pretrained'}: timm {full} ({repo}) is not in the HF cache and {why}.",
            hint=f"Pre-seed the HF cache ({hf_cache_dir()}; set HF_HUB_CACHE or HF_HOME to use another), pass a local "
                 "file with --teacher-weights PATH, or use --teacher-weights random.",
        )


def _is_file_like(weights: str) -> bool:
    return "/" in weights or "\\" in weights or weights.endswith((".safetensors", ".pt", ".pth", ".bin")) or weights.startswith(("~", "."))


# --------------------------------------------------------------------------- teachers
def load_timm_teacher(
    model_name: str, *, weights: str | None, device: str = "cpu", num_classes: int = 0, classes: list[str] | None = None,
    img_size: int = 0, model_kwargs: dict[str, Any] | None = None,
) -> Teacher:
    """``timm:<model_name>``: weights from a file, a cached pretrained tag (default ``pretrained`` = timm's default
    tag, as the CoCa teachers default to theirs), or ``random`` (seeded)."""
    import timm
    import torch

    from distillctl.interfaces import Teacher

    if not timm.is_model(model_name):
        from distillctl.registry import did_you_mean

        raise DistillctlError(f"unknown timm model {model_name!r}.{did_you_mean(model_name, timm.list_models())} "
                              "(see timm.list_models()).")
    kwargs = dict(model_kwargs or {})
    if classes:
        if num_classes and num_classes != len(classes):
            raise DistillctlError(f"teacher.num_classes={num_classes} disagrees with the {len(classes)} teacher.classes.")
        num_classes = len(classes)
    if num_classes:
        kwargs["num_classes"] = int(num_classes)
    cfg = normalize_config({"model_name": model_name, "kwargs": kwargs, "classes": list(classes) if classes else None})
    if img_size:  # ViTs take it as an argument; for other models it only sets the input size (preprocess)
        import inspect

        with torch.device("meta"):  # the architecture only, to read its constructor's arguments
            arch = type(build_model(cfg, "meta"))
        if "img_size" in inspect.signature(arch.__init__).parameters:
            cfg["kwargs"]["img_size"] = int(img_size)
        else:
            cfg["img_size"] = int(img_size)
    w = (weights or "pretrained").strip()
    if w.lower() == "random":
        torch.manual_seed(0)
        model = build_model(cfg)
        what, digest = "random", state_sha256(model)
    elif _is_file_like(w) or Path(w).expanduser().is_file():
        path = Path(w).expanduser()
        if not path.is_file():
            raise WeightsError(f"teacher weights file not found: {path} (check --teacher-weights).")
        model = build_model(cfg)
        load_state_into(model, read_state(path), str(path))
        what, digest = str(path), file_sha256(path)
    else:  # a pretrained tag of this model, from the HF cache (timm downloads only when the hub is reachable)
        tag = None if w.lower() in ("pretrained", "default") else w
        check_tag(model_name, tag)
        full, _ = hf_repo_of(model_name, tag)
        try:
            model = timm.create_model(full, pretrained=True, **cfg["kwargs"])
        except Exception as exc:  # noqa: BLE001 - any loader failure is one line
            raise WeightsError(f"cannot load timm {full}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
        model.distillctl_classes = cfg["classes"] and tuple(cfg["classes"])
        model.distillctl_block_groups = None
        model.distillctl_img_size = cfg["img_size"]
        what, digest = full, state_sha256(model)
    model = model.to(device).eval().requires_grad_(False)
    return Teacher(
        name=f"timm:{model_name}", model=model, tokenizer=None, transform=make_transform(timm_preprocess(model)),
        model_config=cfg, preprocess_config=timm_preprocess(model), weights=what, weights_hash=digest,
        splitter="timm", family="timm", extra={"classes": list(cfg["classes"] or [])},
    )


def preflight_timm_teacher(variant: str, weights: str | None = None, **_: Any) -> None:
    """Cheap check before any model is built: an unknown model name or an uncached tag is one line."""
    import timm

    if not timm.is_model(variant):
        from distillctl.registry import did_you_mean

        raise DistillctlError(f"unknown timm model {variant!r}.{did_you_mean(variant, timm.list_models())} "
                              "(see timm.list_models()).")
    w = (weights or "pretrained").strip()
    if w.lower() != "random" and not _is_file_like(w) and not Path(w).expanduser().is_file():
        check_tag(variant, None if w.lower() in ("pretrained", "default") else w)


def load_bundled_teacher(weights: str | None = None, device: str = "cpu") -> Teacher:
    """The bundled tiny ViT (``distillctl_timm/teacher.safetensors``, made by ``python -m distillctl_timm.train``)."""
    import torch

    from distillctl.interfaces import Teacher

    torch.manual_seed(0)
    model = build_model(BUNDLED_CONFIG)
    w = weights or "bundled"
    if w == "random":
        what, digest = "random", state_sha256(model)
    else:
        path = BUNDLED_FILE if w == "bundled" else Path(w).expanduser()
        if not path.is_file():
            raise WeightsError(f"teacher weights file not found: {path}" + (
                " (reinstall distillctl-timm or run 'python -m distillctl_timm.train')." if w == "bundled" else "."))
        load_state_into(model, read_state(path), "bundled" if w == "bundled" else str(path))
        what, digest = ("bundled" if w == "bundled" else str(path)), file_sha256(path)
    model = model.to(device).eval().requires_grad_(False)
    return Teacher(
        name=BUNDLED_NAME, model=model, tokenizer=None, transform=make_transform(BUNDLED_PREPROCESS),
        model_config=normalize_config(BUNDLED_CONFIG), preprocess_config=dict(BUNDLED_PREPROCESS), weights=what,
        weights_hash=digest, splitter="timm", family="timm", extra={"classes": list(BUNDLED_CONFIG["classes"])},
    )


def config_json(cfg: dict[str, Any]) -> str:
    return json.dumps(cfg, sort_keys=True)
