"""open_clip teacher weights: local files, ``local-dir:`` folders, pretrained tags (HF hub + cache), ``random``.

Shared by the ``coca`` and ``clip`` teachers and the quickstart teacher.

Every failure is one :class:`WeightsError` line naming ``--teacher-weights`` and the fix. A tag that is
not cached and cannot be fetched fails in about 2 s (a socket probe of the hub), not after open_clip's
~47 s of retries.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distillctl.errors import WeightsError
from distillctl.hf_cache import hf_cache_dir, hub_reachable
from distillctl.hf_cache import offline as _offline
from distillctl.openclip.hashing import file_sha256
from distillctl.openclip.tags import unavailable_message

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
# open_clip's preference order inside a local-dir folder (factory._find_checkpoint_in_dir)
DIR_PREFERENCE = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)


@dataclass
class WeightSource:
    """Where a teacher's weights come from. ``path`` None = random init."""

    path: str | None
    description: str
    model_cfg: dict[str, Any] | None = None  # from a local-dir folder's open_clip_config.json
    preprocess: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- resolution
def default_weights(teacher: str, model_name: str) -> str | None:
    """The weights a teacher loads when ``--teacher-weights`` is not given (None: must be given)."""
    import open_clip

    p = Path(model_name)
    if p.is_dir() and find_checkpoint_in_dir(p) is not None:
        return f"local-dir:{p}"
    if model_name in open_clip.list_models():
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if "laion2b_s13b_b90k" in tags:
            return "laion2b_s13b_b90k"
        if tags:
            return tags[0]
    return None


def resolve_weights(spec: str, *, model_name: str | None) -> WeightSource:
    """Turn a ``--teacher-weights`` value into a local file (downloading a tag if needed)."""
    if spec == "random":
        return WeightSource(None, "random")
    if spec.startswith("local-dir:"):
        return local_dir(Path(spec[len("local-dir:"):]).expanduser(), spec)
    p = Path(spec).expanduser()
    if p.is_file():
        return WeightSource(str(p), str(p))
    if p.is_dir():
        return local_dir(p, spec)
    if spec.endswith(WEIGHT_SUFFIXES) or "/" in spec or os.sep in spec or spec.startswith("."):
        raise WeightsError(f"--teacher-weights {spec}: file not found.", hint="Check the path (or pass a pretrained tag).")
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model_name) if model_name in open_clip.list_models() else []
    if model_name and open_clip.get_pretrained_cfg(model_name, spec):
        path = resolve_tag(model_name, spec)
        return WeightSource(path, spec, preprocess=_tag_preprocess(model_name, spec))
    valid = ", ".join(tags) if tags else "none for this model"
    raise WeightsError(
        f"--teacher-weights {spec!r} is not a file, 'local-dir:DIR', 'random' or a pretrained tag of "
        f"{model_name or 'this teacher'} (valid tags: {valid})."
    )


def _tag_preprocess(model_name: str, tag: str) -> dict[str, Any]:
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(model_name, tag)
    keys = ("mean", "std", "interpolation", "resize_mode")
    return {k: (list(pcfg[k]) if isinstance(pcfg[k], tuple) else pcfg[k]) for k in keys if k in pcfg}


def find_checkpoint_in_dir(path: Path) -> Path | None:
    """The weights file open_clip would pick in a ``local-dir`` folder."""
    for name in DIR_PREFERENCE:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + sorted(path.glob("*.pth"))
    return found[0] if found else None


def local_dir(path: Path, spec: str) -> WeightSource:
    """A ``local-dir`` folder's weights file, and its ``open_clip_config.json`` when there is one."""
    if not path.is_dir():
        raise WeightsError(f"--teacher-weights {spec}: folder not found.", hint="Pass an existing local-dir:DIR.")
    ckpt = find_checkpoint_in_dir(path)
    if ckpt is None:
        raise WeightsError(
            f"--teacher-weights {spec}: no weights file in {path} (expected open_clip_model.safetensors, "
            "open_clip_pytorch_model.bin or another *.safetensors/*.bin/*.pth)."
        )
    cfg_path = path / "open_clip_config.json"
    model_cfg, pre = None, {}
    if cfg_path.is_file():
        try:
            data = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WeightsError(f"--teacher-weights {spec}: {cfg_path} is not valid JSON ({exc}).") from None
        if isinstance(data, dict):
            model_cfg = data.get("model_cfg")
            pre = dict(data.get("preprocess_cfg") or {})
    return WeightSource(str(ckpt), spec, model_cfg=model_cfg, preprocess=pre)


def resolve_tag(model_name: str, tag: str) -> str:
    """Local path of a pretrained tag's weights: the HF cache first, then (if reachable) the hub."""
    import open_clip
    from open_clip.pretrained import HF_WEIGHTS_NAME

    pcfg = open_clip.get_pretrained_cfg(model_name, tag)
    hf_hub = pcfg.get("hf_hub", "")
    if not hf_hub:
        return _resolve_url_tag(model_name, tag, pcfg.get("url", ""))
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    stem = filename.rsplit(".", 1)[0]
    candidates = ["open_clip_model.safetensors", f"{stem}.safetensors", filename]
    candidates = list(dict.fromkeys(candidates))
    cache = hf_cache_dir()

    from huggingface_hub import try_to_load_from_cache

    for name in candidates:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=str(cache))
        if isinstance(hit, str) and Path(hit).is_file():
            return hit

    if _offline():
        raise unavailable_message(model_name, tag, repo_id, cache, "HF_HUB_OFFLINE is set")
    if not hub_reachable():
        raise unavailable_message(model_name, tag, repo_id, cache, "the hub is unreachable")

    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for name in candidates:
        try:
            return hf_hub_download(repo_id, name, cache_dir=str(cache), etag_timeout=5)
        except Exception as exc:  # noqa: BLE001 - try the next file name, report the last error
            last = exc
    msg = " ".join(str(last).split())[:200] if last else "no file found"
    raise WeightsError(f"--teacher-weights {tag}: could not download {model_name} tag {tag!r} ({repo_id}): {msg}.",
                       hint=f"Pass a local file with --teacher-weights PATH (HF cache: {cache}).")


def _resolve_url_tag(model_name: str, tag: str, url: str) -> str:
    if not url:
        raise WeightsError(f"--teacher-weights {tag}: open_clip lists no download location for {model_name}.")
    if _offline() or not hub_reachable():
        raise WeightsError(
            f"--teacher-weights {tag}: {model_name} weights ({url}) cannot be downloaded offline.",
            hint="Pass a local file with --teacher-weights PATH.",
        )
    from open_clip.pretrained import download_pretrained_from_url

    try:
        return download_pretrained_from_url(url)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"--teacher-weights {tag}: download of {url} failed: {' '.join(str(exc).split())[:200]}.") from None


# --------------------------------------------------------------------------- loading
def read_state_dict(path: str | Path, *, what: str | None = None) -> dict[str, torch.Tensor]:
    """Read a weights file: safetensors, or torch.load(weights_only=True); unwraps ``{"state_dict": ...}``
    (open_clip training checkpoints) and strips DDP's ``module.`` prefixes."""
    path = Path(path)
    what = what or str(path)
    if not path.is_file():
        raise WeightsError(f"--teacher-weights {what}: file not found.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise WeightsError(f"--teacher-weights {what}: not a readable safetensors file ({_short(exc)}).") from None
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError ...
            raise WeightsError(
                f"--teacher-weights {what}: cannot be read with torch.load(weights_only=True) ({_short(exc)}).",
                hint="Convert it to .safetensors or a plain state dict.",
            ) from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"--teacher-weights {what}: not a state dict of tensors (nor {{'state_dict': ...}}).")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def mismatch_message(model: torch.nn.Module, sd: dict[str, torch.Tensor], limit: int = 3) -> str | None:
    """One line describing missing / unexpected / wrongly shaped keys, or None when ``sd`` fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {list(sd[k].shape)} vs {list(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts) if parts else None


def load_weights_into(model: torch.nn.Module, path: str | Path, *, what: str | None = None) -> None:
    """Load a weights file into ``model`` strictly; a mismatch is one WeightsError line naming keys."""
    what = what or str(path)
    sd = read_state_dict(path, what=what)
    own = model.state_dict()
    if "logit_scale" in sd and "logit_scale" in own and sd["logit_scale"].ndim != own["logit_scale"].ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(own["logit_scale"].shape)
    problem = mismatch_message(model, sd)
    if problem is not None:
        raise WeightsError(
            f"--teacher-weights {what} does not fit the teacher's architecture: {problem}.",
            hint="Pick the teacher these weights were trained for (--teacher), or other weights.",
        )
    model.load_state_dict(sd, strict=True)


def check_same_architecture(cfg: dict[str, Any], other: Any, *, teacher: str, weights: str) -> None:
    """A ``local-dir`` folder's model cfg must equal the teacher's (else its weights belong elsewhere)."""
    if not isinstance(other, dict):
        return
    a = {k: v for k, v in cfg.items() if k != "custom_text"}
    b = {k: v for k, v in other.items() if k != "custom_text"}
    diff = _first_difference(a, b)
    if diff is not None:
        raise WeightsError(
            f"--teacher-weights {weights}: its open_clip_config.json describes another architecture than teacher "
            f"{teacher!r} ({diff}).",
            hint=f"Use --teacher open-clip:{weights[len('local-dir:'):] if weights.startswith('local-dir:') else weights}.",
        )


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:  # a key written by one side only: open_clip's default applies
                continue
            d = _first_difference(a[k], b[k], f"{prefix}{k}.")
            if d is not None:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return None if a == b else f"{prefix.rstrip('.')}: teacher {a!r} vs folder {b!r}"


def _short(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]

__all__ = ["DIR_PREFERENCE", "WEIGHT_SUFFIXES", "WeightSource", "check_same_architecture", "default_weights",
           "file_sha256", "find_checkpoint_in_dir", "hf_cache_dir", "hub_reachable", "load_weights_into", "local_dir",
           "mismatch_message", "read_state_dict", "resolve_tag", "resolve_weights"]
