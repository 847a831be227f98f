"""What the two open_clip families (``coca``, ``clip``) share as methods (:class:`OpenClipFamilyMixin`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distillctl.errors import DistillctlError
from distillctl.interfaces import Teacher
from distillctl.openclip.export import export_local_dir, image_text_dummy_inputs


class OpenClipFamilyMixin:
    """What the ``coca`` and ``clip`` families share as methods: ``(image, text)`` inputs, dummy inputs, the
    ``local-dir`` export, and the L2-normalised embeddings evaluators use (open_clip's ``encode_image`` /
    ``encode_text``)."""

    name: str

    def inputs(self, batch: Any, device: Any) -> dict[str, torch.Tensor]:
        if batch.text is None:
            raise DistillctlError(f"the {self.name} family needs captions: the teacher has no tokenizer.")
        return {"image": batch.images.to(device, non_blocking=True),  # [B, 3, H, W]
                "text": batch.text.to(device, non_blocking=True)}  # [B, L]

    def dummy_inputs(self, bundle: Teacher, batch_size: int, device: Any) -> dict[str, torch.Tensor]:
        return image_text_dummy_inputs(bundle, batch_size, device)

    def export(self, model: torch.nn.Module, out_dir: Path, *, model_config: dict[str, Any], source: Teacher,
               metadata: dict[str, str], dtype: str) -> dict[str, Any]:
        return export_local_dir(self.name, model, out_dir, model_config=model_config, source=source,
                                metadata=metadata, dtype=dtype)

    def encode_image(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(images, normalize=True)

    def encode_text(self, model: torch.nn.Module, text: torch.Tensor) -> torch.Tensor:
        return model.encode_text(text, normalize=True)


__all__ = ["OpenClipFamilyMixin"]
