"""The ``timm`` splitter: modules of a timm image classifier, found through timm's own ``feature_info``.

* Hierarchical models (ConvNeXt, ResNet, EfficientNet-style ``stages``...): one module per stage
  that ``model.feature_info`` names (``stage0``, ``stage1``...); its layers are the stage's blocks
  (``stages.1.blocks.0``, ``layer2.0``...), each returning ``[B, C, H, W]`` (the engine flattens it).
* Plain ViTs (DeiT, ViT, every model whose ``feature_info`` lists ``blocks.{i}``): the ``blocks``
  ``nn.ModuleList`` split into groups (default ``early`` / ``middle`` / ``late``), each a
  :class:`~distillctl.interfaces.Stack` over the shared list with its own ``start``; each block
  returns ``[B, L, D]`` tokens (CLS / prefix tokens included: every position counts).

Group sizes: a model built by this plugin carries them (``model.distillctl_block_groups``, from the
model config's ``block_groups``, which ``with_depths`` writes for a shallower student) and they are
used when their count matches ``groups``; otherwise the blocks are split as evenly as possible,
earlier groups taking the remainder. So a student that keeps
1 of 2 blocks in ``middle`` is split the way its layer map was planned, whatever the ratios.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distillctl.errors import DistillctlError
from distillctl.interfaces import Module, Stack

DEFAULT_GROUPS = ("early", "middle", "late")


def even_split(n: int, k: int) -> list[int]:
    """``n`` blocks in ``k`` groups as evenly as possible, earlier groups one larger: 7, 3 -> [3, 2, 2]."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _feature_modules(model: torch.nn.Module) -> list[str]:
    info = getattr(model, "feature_info", None)
    if not info:
        return []
    return [str(f.get("module", "")) for f in info if isinstance(f, dict) and f.get("module")]


def is_plain(model: torch.nn.Module) -> bool:
    """A plain (isotropic) ViT-style model: ``feature_info`` lists its ``blocks`` (or it has no stages at all)."""
    mods = _feature_modules(model)
    if mods:
        return all(m.startswith("blocks.") for m in mods)
    return isinstance(getattr(model, "blocks", None), (torch.nn.ModuleList, torch.nn.Sequential))


def _stage_stack(model: torch.nn.Module, path: str) -> str | None:
    """The indexable run of blocks of a stage: ``<stage>.blocks`` when it has one, else the stage itself."""
    mods = dict(model.named_modules())
    stage = mods.get(path)
    if stage is None:
        return None
    blocks = getattr(stage, "blocks", None)
    if isinstance(blocks, (torch.nn.Sequential, torch.nn.ModuleList)) and len(blocks):
        return f"{path}.blocks"
    if isinstance(stage, (torch.nn.Sequential, torch.nn.ModuleList)) and len(stage):
        return path
    return None


class TimmSplitter:
    """Stages of hierarchical timm models; ``groups`` of blocks (default early/middle/late) of plain ViTs."""

    name = "timm"

    def __init__(self, groups: Sequence[str] = DEFAULT_GROUPS) -> None:
        groups = tuple(groups)
        if not groups or not all(isinstance(g, str) and g for g in groups) or len(set(groups)) != len(groups):
            raise DistillctlError(f"splitter.groups must be distinct non-empty names, got {list(groups)!r}.")
        self.groups = groups

    def modules(self, model: torch.nn.Module) -> list[Module]:
        if is_plain(model):
            return self._block_groups(model)
        out = []
        for path in _feature_modules(model):
            stack = _stage_stack(model, path)
            if stack is not None:
                out.append(Module(f"stage{len(out)}", (Stack(stack, len(dict(model.named_modules())[stack])),)))
        if not out:
            raise DistillctlError(f"the 'timm' splitter finds no stages or blocks in {type(model).__name__} "
                                  "(no feature_info stages with blocks, no 'blocks' list).")
        return out

    def _block_groups(self, model: torch.nn.Module) -> list[Module]:
        n = len(model.blocks)  # type: ignore[arg-type]
        sizes = getattr(model, "distillctl_block_groups", None)
        if sizes is not None and len(sizes) != len(self.groups):
            sizes = None  # recorded for another grouping (e.g. the teacher's default three): split evenly
        sizes = list(sizes) if sizes is not None else even_split(n, len(self.groups))
        if sum(sizes) != n or min(sizes) < 1:
            raise DistillctlError(f"cannot split {n} blocks into groups {sizes} ({', '.join(self.groups)}): "
                                  "every group needs at least one block.",
                                  hint=f"Use fewer splitter.groups (at most {n}).")
        out, start = [], 0
        for name, size in zip(self.groups, sizes, strict=True):
            out.append(Module(name, (Stack("blocks", size, start),)))
            start += size
        return out

    # ------------------------------------------------------------------ checks before training
    def check_compatible(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        t_mods, s_mods = self.modules(teacher), self.modules(student)
        t_names, s_names = [m.name for m in t_mods], [m.name for m in s_mods]
        if t_names != s_names:
            raise DistillctlError(
                f"student modules {', '.join(s_names)} do not match the teacher's {', '.join(t_names)}: "
                "teacher and student must both be plain ViTs or have the same number of stages.")
        t_shapes, s_shapes = token_shapes(teacher, t_mods), token_shapes(student, s_mods)
        for name in t_names:
            if t_shapes[name][:-1] != s_shapes[name][:-1]:
                raise DistillctlError(
                    f"student {name} hidden states {list(s_shapes[name][:-1])} (positions) differ from the teacher's "
                    f"{list(t_shapes[name][:-1])}: paired layers need the same token grid.",
                    hint="Give the student the teacher's img_size and patch size (student.kwargs).")
        t_cls, s_cls = num_classes(teacher), num_classes(student)
        if t_cls != s_cls:
            raise DistillctlError(f"student has {s_cls} classes, the teacher {t_cls}: logit distillation needs the same classes.")


def num_classes(model: torch.nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def input_size(model: torch.nn.Module) -> tuple[int, int, int]:
    """The input size of a model: timm's ``resolve_model_data_config``, with a ViT's own ``img_size``
    (``patch_embed.img_size``) when it was built for another size than its pretrained config."""
    from timm.data import resolve_model_data_config

    c, h, w = resolve_model_data_config(model)["input_size"]
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or getattr(model, "distillctl_img_size", None)
    if size is not None:
        h, w = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
    return int(c), int(h), int(w)


def token_shapes(model: torch.nn.Module, modules: list[Module]) -> dict[str, tuple[int, ...]]:
    """Per module, the (positions, width) of its last layer's hidden state on a one-image dummy forward.

    Read through forward hooks on the layer paths, the engine's own way, so that what is checked is
    exactly what training will pair (``forward_intermediates`` drops prefix tokens and reshapes ViT
    tokens to a grid, so it would hide a CLS / register-token mismatch)."""
    from distillctl.layerwise import HiddenStateTap

    c, h, w = input_size(model)
    dev = next(iter(model.parameters())).device
    x = torch.zeros(1, c, h, w, device=dev)
    paths = {m.name: m.stacks[-1].layer(m.stacks[-1].depth - 1) for m in modules}
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), HiddenStateTap(model, paths.values()) as tap:
            model(x)
    finally:
        model.train(was)
    out = {}
    for name, p in paths.items():
        hs = tap.outputs[p]
        out[name] = (hs.shape[2] * hs.shape[3], hs.shape[1]) if hs.ndim == 4 else (hs.shape[1], hs.shape[2])
    return out


def splitter_factory(groups: list[str] | None = None) -> Any:
    return TimmSplitter(groups or DEFAULT_GROUPS)
