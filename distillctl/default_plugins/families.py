"""Built-in model families (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


def coca(caption_weight: float = 2.0, clip_weight: float = 1.0, contrastive_kd_weight: float = 1.0,
         embedding_kd_weight: float = 1.0) -> Any:
    """open_clip CoCa: contrastive + captioning task loss; caption-logit and similarity-matrix KD."""
    from distillctl.coca.family import CocaFamily

    return CocaFamily(caption_weight=caption_weight, clip_weight=clip_weight, contrastive_kd_weight=contrastive_kd_weight,
                      embedding_kd_weight=embedding_kd_weight)


def clip(contrastive_kd_weight: float = 1.0, embedding_kd_weight: float = 1.0) -> Any:
    """open_clip CLIP (open_clip or timm ViT towers): contrastive task loss; similarity-matrix KL and embedding KD."""
    from distillctl.clip.family import ClipFamily

    return ClipFamily(contrastive_kd_weight=contrastive_kd_weight, embedding_kd_weight=embedding_kd_weight)


@hookimpl
def register_families(register: Register) -> None:
    register("coca", coca)
    register("clip", clip)
