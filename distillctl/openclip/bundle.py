"""A built open_clip model wrapped as a :class:`~distillctl.interfaces.Teacher` bundle (``coca`` and ``clip``)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from distillctl.interfaces import Teacher
from distillctl.openclip.tokenizer import make_tokenizer
from distillctl.openclip.transforms import make_transform


def openclip_bundle(
    name: str,
    model: torch.nn.Module,
    model_cfg: dict[str, Any],
    preprocess: dict[str, Any],
    *,
    family: str,
    splitter: str,
    weights: str,
    weights_hash: str,
    tokenizer: Any = None,
    tokenizer_config: dict[str, Any] | None = None,
    model_name: str | None = None,
    device: str | torch.device = "cpu",
) -> Teacher:
    """Bundle a built model: moved to ``device`` (not on ``meta``), eval mode, frozen; open_clip's tokenizer
    at the config's context length unless ``tokenizer`` is given; open_clip's eval transform."""
    if torch.device(device).type != "meta":
        model = model.to(device)
    model.eval().requires_grad_(False)
    if tokenizer is None:
        tokenizer = make_tokenizer(model_cfg)
        tokenizer_config = {"type": "open_clip", "model": model_name or name, "context_length": tokenizer.context_length}
    return Teacher(
        name=name, model=model, tokenizer=tokenizer, transform=make_transform(preprocess),
        model_config=copy.deepcopy(model_cfg), preprocess_config=copy.deepcopy(preprocess),
        weights=weights, weights_hash=weights_hash, family=family, splitter=splitter,
        tokenizer_config=dict(tokenizer_config or {}),
    )


__all__ = ["openclip_bundle"]
