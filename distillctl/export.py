"""Export a student: ``student.safetensors`` (weights only) + ``open_clip_config.json``.

The folder then loads unchanged with ``open_clip.create_model_and_transforms("local-dir:OUT")``
(open_clip picks the only ``*.safetensors`` in the folder). Projections and optimizer state are never
exported. Files are written to a temporary name and renamed, so a crash leaves no half file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from distillctl import __version__

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def export_student(
    model: torch.nn.Module,
    out_dir: Path,
    model_config: dict[str, Any],
    teacher: Any,
    *,
    dtype: str = "fp32",
    extra_metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write the student; return sizes for the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = DTYPES[dtype]
    state = {
        k: v.detach().to("cpu", dtype=target if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    metadata = {
        "format": "pt",
        "distillctl_version": __version__,
        "model_config": json.dumps(model_config),
        "preprocess_config": json.dumps(teacher.preprocess_config),
        "tokenizer_config": json.dumps(teacher.tokenizer_config),
        "teacher": teacher.name,
        "teacher_weights": str(teacher.weights),
        "teacher_weights_hash": teacher.weights_hash,
        "dtype": dtype,
        **(extra_metadata or {}),
    }
    path = out_dir / "student.safetensors"
    tmp = out_dir / "student.safetensors.tmp"
    save_file(state, str(tmp), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # safetensors writes 0600; an exported model is meant to be shared
    tmp.replace(path)
    _atomic_write_text(
        out_dir / "open_clip_config.json",
        json.dumps({"model_cfg": model_config, "preprocess_cfg": teacher.preprocess_config,
                    "distillctl": {"tokenizer": teacher.tokenizer_config, "teacher": teacher.name}}, indent=2),
    )
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


def load_student(run_dir: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, str]]:
    """Rebuild an exported student (fp32, eval mode) from ``run_dir/student.safetensors``."""
    from distillctl.coca.models import build_coca
    from distillctl.errors import DistillctlError

    path = run_dir / "student.safetensors" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise DistillctlError(f"no student.safetensors in {run_dir}; pass the --out folder of a distill run.")
    try:
        state, meta = load_student_state(path)
        cfg = json.loads(meta["model_config"])
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file is bad input
        raise DistillctlError(f"{path} is not a distillctl student ({type(exc).__name__}: {exc}).") from None
    model = build_coca(cfg, init_decoder=False)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(device).eval(), meta
