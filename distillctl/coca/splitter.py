"""The ``coca`` splitter: vision / text / multimodal modules of an open_clip CoCa.

Token layouts (OPEN_CLIP.md section 3), all batch-first ``[B, L, D]``:

* ``visual.transformer.resblocks.{i}``: CLS first, then the patch grid; every token counts.
* ``text.transformer.resblocks.{i}``: the ``L`` input tokens plus the CLS **appended last** (L+1).
* ``text_decoder.resblocks.{i}`` / ``text_decoder.cross_attn.{i}``: ``L-1`` positions (teacher forcing
  drops the last token); position j predicts ``text[:, j+1]``, so pads are ``text[:, 1:] == 0``.
"""

from __future__ import annotations

import torch

from distillctl.errors import DistillctlError
from distillctl.interfaces import Module, Stack

VISION_STACK = "visual.transformer.resblocks"
TEXT_STACK = "text.transformer.resblocks"
DECODER_STACKS = ("text_decoder.resblocks", "text_decoder.cross_attn")
MODULE_STACKS: dict[str, tuple[str, ...]] = {
    "vision": (VISION_STACK,),
    "text": (TEXT_STACK,),
    "multimodal": DECODER_STACKS,
}
PAD_ID = 0


def _get(model: torch.nn.Module, path: str) -> torch.nn.Module:
    obj: torch.nn.Module = model
    for part in path.split("."):
        if not hasattr(obj, part):
            raise DistillctlError(
                f"model {type(model).__name__} has no {path!r}: the 'coca' splitter only understands open_clip CoCa models."
            )
        obj = getattr(obj, part)
    return obj


def stack_depth(model: torch.nn.Module, stack: str) -> int:
    return len(_get(model, stack))  # nn.ModuleList


def layer_width(model: torch.nn.Module, path: str) -> int:
    """Hidden width of a block's output (works on meta models): ``ln_1`` size, else ``attn.embed_dim``."""
    mods = dict(model.named_modules())
    if path not in mods:
        raise DistillctlError(f"no layer {path!r} in {type(model).__name__}; valid stacks: {', '.join(sum(MODULE_STACKS.values(), ()))}.")
    block = mods[path]
    ln = getattr(block, "ln_1", None)
    if ln is not None and getattr(ln, "normalized_shape", None):
        return int(ln.normalized_shape[-1])
    attn = getattr(block, "attn", None)
    if attn is not None and hasattr(attn, "embed_dim"):
        return int(attn.embed_dim)
    raise DistillctlError(f"cannot tell the hidden width of {path!r} ({type(block).__name__}).")


def vision_grid(model: torch.nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(grid, image_size, patch_size)`` of a CoCa's ViT, each as (h, w)."""
    v = _get(model, "visual")

    def pair(x: object) -> tuple[int, int]:
        return (int(x[0]), int(x[1])) if isinstance(x, (tuple, list)) else (int(x), int(x))  # type: ignore[index]

    return pair(v.grid_size), pair(v.image_size), pair(v.patch_size)


class CocaSplitter:
    """Modules ``vision``, ``text`` and ``multimodal`` (decoder self-attn + cross-attn stacks) of a CoCa."""

    name = "coca"

    def modules(self, model: torch.nn.Module) -> list[Module]:
        out = []
        for name, stacks in MODULE_STACKS.items():
            out.append(Module(name, tuple(Stack(s, stack_depth(model, s)) for s in stacks)))
        return out

    def position_mask(self, module: str, text: torch.Tensor) -> torch.Tensor | None:
        if module == "vision":
            return None  # CLS + every patch token carries loss
        if text.ndim != 2:
            raise DistillctlError(f"position_mask expects token ids [B, L], got shape {list(text.shape)}.")
        if module == "text":
            cls = torch.ones(text.shape[0], 1, dtype=torch.bool, device=text.device)
            return torch.cat([text != PAD_ID, cls], dim=1)  # [B, L+1]: CLS appended last
        if module == "multimodal":
            return text[:, 1:] != PAD_ID  # [B, L-1]: the decoder's labels
        raise DistillctlError(f"unknown CoCa module {module!r}; valid modules: {', '.join(MODULE_STACKS)}.")

    def check_compatible(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        self.modules(teacher), self.modules(student)  # both must be CoCa-shaped
        t_grid, t_img, t_patch = vision_grid(teacher)
        s_grid, s_img, s_patch = vision_grid(student)
        if t_grid != s_grid:
            raise DistillctlError(
                f"student vision token grid {s_grid[0]}x{s_grid[1]} (image {s_img[0]}, patch {s_patch[0]}) differs from the "
                f"teacher's {t_grid[0]}x{t_grid[1]} (image {t_img[0]}, patch {t_patch[0]}): only same-grid students are "
                f"supported.",
                hint=f"Set the student's vision_cfg.patch_size={t_patch[0]} and image_size={t_img[0]}.",
            )
        for what, key, t, s in (
            ("text vocab size", "text_cfg.vocab_size", *_both(teacher, student, lambda m: m.text.vocab_size)),
            ("text context length", "text_cfg.context_length", *_both(teacher, student, lambda m: m.text.context_length)),
            ("decoder vocab size", "multimodal_cfg.vocab_size",
             *_both(teacher, student, lambda m: int(m.text_decoder.text_projection.shape[-1]))),
            ("decoder context length", "multimodal_cfg.context_length",
             *_both(teacher, student, lambda m: m.text_decoder.context_length)),
        ):
            if t != s:
                raise DistillctlError(
                    f"student {what} {s} differs from the teacher's {t}: student and teacher must share the tokenizer.",
                    hint=f"Set the student's {key}={t}.",
                )


def _both(teacher: torch.nn.Module, student: torch.nn.Module, get) -> tuple[object, object]:
    out = []
    for m in (teacher, student):
        try:
            out.append(get(m))
        except AttributeError:
            out.append(None)
    return out[0], out[1]
