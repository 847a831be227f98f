"""The ``local-dir`` export of the open_clip families (``coca``, ``clip``), and their dummy inputs.

An export is ``student.safetensors`` (metadata: family, model/preprocess/tokenizer configs) plus
``open_clip_config.json`` beside it, so that ``open_clip.create_model_and_transforms("local-dir:OUT")``
loads the student unchanged (open_clip picks the folder's ``*.safetensors``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from distillctl.interfaces import Teacher


def export_local_dir(family: str, model: torch.nn.Module, out_dir: Path, *, model_config: dict[str, Any], source: Teacher,
                     metadata: dict[str, str], dtype: str) -> dict[str, Any]:
    """Write the student as an open_clip ``local-dir`` folder; return the sizes for the report."""
    from distillctl.export import atomic_write_text, save_weights

    sizes = save_weights(model, Path(out_dir) / "student.safetensors", dtype=dtype, metadata={
        **metadata,
        "family": family,
        "model_config": json.dumps(model_config),
        "preprocess_config": json.dumps(source.preprocess_config),
        "tokenizer_config": json.dumps(source.tokenizer_config),
    })
    atomic_write_text(
        Path(out_dir) / "open_clip_config.json",
        json.dumps({"model_cfg": model_config, "preprocess_cfg": source.preprocess_config,
                    "distillctl": {"family": family, "tokenizer": source.tokenizer_config, "teacher": source.name}},
                   indent=2),
    )
    return sizes


def image_text_dummy_inputs(bundle: Teacher, batch_size: int, device: Any) -> dict[str, torch.Tensor]:
    """Zero images at the preprocess size and zero token ids at the tokenizer's context length (shapes only)."""
    size = bundle.preprocess_config.get("size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    assert bundle.tokenizer is not None
    return {"image": torch.zeros(batch_size, 3, h, w, device=device),
            "text": torch.zeros(batch_size, int(bundle.tokenizer.context_length), dtype=torch.long, device=device)}


__all__ = ["export_local_dir", "image_text_dummy_inputs"]
