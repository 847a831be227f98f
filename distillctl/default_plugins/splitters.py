"""Built-in splitters (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


def coca() -> Any:
    """open_clip CoCa: vision / text / multimodal (decoder self-attn + cross-attn) modules."""
    from distillctl.coca.splitter import CocaSplitter

    return CocaSplitter()


def clip() -> Any:
    """open_clip CLIP: vision (open_clip ViT or timm ViT blocks) / text modules."""
    from distillctl.clip.splitter import ClipSplitter

    return ClipSplitter()


@hookimpl
def register_splitters(register: Register) -> None:
    register("coca", coca)
    register("clip", clip)
