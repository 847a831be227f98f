"""Export and reload a student, generically: the family decides *what* is written, this module how.

``save_weights`` writes ``student.safetensors`` (weights only; str->str metadata) atomically with the
usual file mode; ``read_export`` reads it back; ``load_student`` rebuilds any family's student from
its export (``family`` in the metadata; v0.1 exports without it are CoCa). Projections and optimizer
state are never exported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from distillctl import __version__
from distillctl.errors import DistillctlError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHTS_NAME = "student.safetensors"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name and rename it over ``path`` (a crash leaves no half file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def save_weights(model: torch.nn.Module, path: Path, *, dtype: str = "fp32", metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Write ``model``'s state dict as safetensors (``dtype`` for floating tensors); return sizes for the report."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    target = DTYPES[dtype]
    state = {
        k: v.detach().to("cpu", dtype=target if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {"format": "pt", "distillctl_version": __version__, "dtype": dtype,
            **{k: str(v) for k, v in (metadata or {}).items()}}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # safetensors writes 0600; an exported model is meant to be shared
    tmp.replace(path)
    params = sum(v.numel() for v in state.values())
    size = path.stat().st_size
    bytes_per = torch.finfo(target).bits // 8
    return {
        "student_file": str(path),
        "student_file_bytes": size,
        "student_tensor_params": params,
        "export_dtype": dtype,
        "file_vs_params_ratio": size / max(params * bytes_per, 1),
    }


def load_student_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights and metadata of an exported student."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return state, meta


def student_path(run: Path) -> Path:
    """``RUN/student.safetensors`` for a run folder, or the file itself."""
    path = run / WEIGHTS_NAME if run.is_dir() else run
    if not path.is_file():
        raise DistillctlError(f"no {WEIGHTS_NAME} in {run}; pass the --out folder of a distill run.")
    return path


def read_export(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, Any]]:
    """(state, metadata, model_config) of an export; a foreign or damaged file is one DistillctlError line."""
    try:
        state, meta = load_student_state(path)
        cfg = json.loads(meta["model_config"])
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file is bad input
        raise DistillctlError(f"{path} is not a distillctl student ({type(exc).__name__}: {exc}).") from None
    return state, meta, cfg


def export_family(path: Path) -> str:
    """The family that wrote an export (``coca`` for v0.1 exports, which did not record it)."""
    try:
        _, meta = _metadata(path)
    except Exception as exc:  # noqa: BLE001
        raise DistillctlError(f"{path} is not a distillctl student ({type(exc).__name__}: {exc}).") from None
    return meta.get("family", "coca")


def _metadata(path: Path) -> tuple[None, dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return None, f.metadata() or {}


def load_student(run: Path, device: str = "cpu") -> tuple[Any, dict[str, str]]:
    """Rebuild an exported student of any family: ``(bundle, metadata)``; ``bundle.model`` is in eval mode."""
    from distillctl.plugins import registry

    path = student_path(run)
    family = registry("family").create(export_family(path))
    bundle = family.load(path, device)
    return bundle, _metadata(path)[1]


__all__ = ["DTYPES", "atomic_write_text", "export_family", "load_student", "load_student_state", "read_export",
           "save_weights", "student_path"]
