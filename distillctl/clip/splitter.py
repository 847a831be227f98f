"""The ``clip`` splitter: ``vision`` and ``text`` modules of an open_clip CLIP (or CustomTextCLIP).

Layer paths and token layouts, all batch-first ``[B, L, D]`` (checked on built models, open_clip 3.3.0):

* vision, open_clip ViT: ``visual.transformer.resblocks.{i}`` -> CLS first, then the patch grid (1 + g²).
* vision, timm tower: ``visual.trunk.blocks.{i}`` -> the trunk's prefix tokens (CLS, registers), then the
  grid. Every vision token carries loss.
* text, ``CLIP``: ``transformer.resblocks.{i}`` (the text tower lives at the top level) -> the ``L``
  input tokens; no CLS is appended, the embedding is pooled at the EOT token (argmax), pads are ``0``.
* text, ``CustomTextCLIP``: ``text.transformer.resblocks.{i}`` -> ``L`` tokens, plus a CLS appended
  last (``L + 1``) when the tower has ``cls_emb`` (``embed_cls``).
"""

from __future__ import annotations

from typing import Any

import torch

from distillctl.errors import DistillctlError
from distillctl.interfaces import Module, Stack

VISION_STACKS = ("visual.transformer.resblocks", "visual.trunk.blocks")
TEXT_STACKS = ("transformer.resblocks", "text.transformer.resblocks")
MODULES = ("vision", "text")


def _find(model: torch.nn.Module, path: str) -> Any:
    obj: Any = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def vision_stack(model: torch.nn.Module) -> str:
    """Path of the vision tower's block list (open_clip ViT or timm ViT-like trunk)."""
    for path in VISION_STACKS:
        blocks = _find(model, path)
        if isinstance(blocks, (torch.nn.ModuleList, torch.nn.Sequential)):
            return path
    visual = getattr(model, "visual", None)
    kind = type(visual).__name__ if visual is not None else "none"
    trunk = getattr(visual, "trunk", None)
    detail = f" (timm trunk {type(trunk).__name__} has no `blocks`)" if trunk is not None else ""
    raise DistillctlError(
        f"model {type(model).__name__} has no vision blocks at {' or '.join(VISION_STACKS)}: vision tower {kind}{detail}. "
        "The 'clip' splitter understands open_clip ViT towers and timm ViT-like towers (a `blocks` list).",
    )


def text_stack(model: torch.nn.Module) -> str:
    """Path of the text tower's block list: top-level ``transformer`` (CLIP) or ``text.transformer`` (CustomTextCLIP)."""
    for path in TEXT_STACKS:
        if isinstance(_find(model, path), torch.nn.ModuleList):
            return path
    raise DistillctlError(
        f"model {type(model).__name__} has no text blocks at {' or '.join(TEXT_STACKS)}: the 'clip' splitter understands "
        "open_clip CLIP / CustomTextCLIP text transformers (not Hugging Face text towers)."
    )


def text_tower(model: torch.nn.Module) -> Any:
    """The object holding ``context_length``, ``vocab_size`` (and ``cls_emb``): the model or ``model.text``."""
    return model.text if text_stack(model).startswith("text.") else model


def text_has_cls(model: torch.nn.Module) -> bool:
    """True when the text blocks see a CLS appended after the ``L`` tokens (CustomTextCLIP ``embed_cls``)."""
    return getattr(text_tower(model), "cls_emb", None) is not None


def vision_tokens(model: torch.nn.Module) -> tuple[int, str]:
    """``(tokens per image at the vision blocks, a description)`` for grid compatibility checks."""
    visual = model.visual
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # timm
        pe = getattr(trunk, "patch_embed", None)
        grid = tuple(getattr(pe, "grid_size", None) or ())
        if len(grid) != 2:
            raise DistillctlError(f"cannot tell the token grid of timm tower {type(trunk).__name__} (no patch_embed.grid_size).")
        prefix = int(getattr(trunk, "num_prefix_tokens", 0))
        return prefix + grid[0] * grid[1], f"{grid[0]}x{grid[1]} grid + {prefix} prefix tokens"
    g = visual.grid_size
    gh, gw = (g, g) if isinstance(g, int) else (int(g[0]), int(g[1]))
    ps = visual.patch_size
    p = ps if isinstance(ps, int) else ps[0]
    return 1 + gh * gw, f"{gh}x{gw} grid (image {visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size}, patch {p}) + CLS"


class ClipSplitter:
    """Modules ``vision`` (ViT blocks, open_clip or timm) and ``text`` (text transformer blocks) of a CLIP."""

    name = "clip"

    def modules(self, model: torch.nn.Module) -> list[Module]:
        v, t = vision_stack(model), text_stack(model)
        return [Module("vision", (Stack(v, len(_find(model, v))),)),
                Module("text", (Stack(t, len(_find(model, t))),))]

    def position_mask(self, module: str, text: torch.Tensor, *, text_cls: bool = False) -> torch.Tensor | None:
        """Bool ``[B, L_module]`` of positions that carry layerwise loss (None = all)."""
        if module == "vision":
            return None  # CLS / prefix tokens + every patch token carry loss
        if module != "text":
            raise DistillctlError(f"unknown CLIP module {module!r}; valid modules: {', '.join(MODULES)}.")
        if text.ndim != 2:
            raise DistillctlError(f"position_mask expects token ids [B, L], got shape {list(text.shape)}.")
        mask = text != 0  # [B, L]: pads (id 0) after the EOT token carry nothing
        if text_cls:
            mask = torch.cat([mask, torch.ones(text.shape[0], 1, dtype=torch.bool, device=text.device)], dim=1)  # [B, L+1]
        return mask

    def check_compatible(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        self.modules(teacher), self.modules(student)  # both must be CLIP-shaped
        (t_n, t_desc), (s_n, s_desc) = vision_tokens(teacher), vision_tokens(student)
        if t_n != s_n:
            raise DistillctlError(
                f"student vision tokens {s_n} ({s_desc}) differ from the teacher's {t_n} ({t_desc}): hidden states can "
                "only be paired on the same token grid.",
                hint="Give the student the teacher's vision_cfg.image_size and patch_size (or the same timm model).",
            )
        tt, st = text_tower(teacher), text_tower(student)
        for what, key, a, b in (
            ("text vocab size", "text_cfg.vocab_size", tt.vocab_size, st.vocab_size),
            ("text context length", "text_cfg.context_length", tt.context_length, st.context_length),
            ("text CLS token (embed_cls)", "text_cfg.embed_cls", text_has_cls(teacher), text_has_cls(student)),
        ):
            if a != b:
                raise DistillctlError(
                    f"student {what} {b} differs from the teacher's {a}: student and teacher must share the tokenizer "
                    "and the text token layout.",
                    hint=f"Set the student's {key}={a}.",
                )
