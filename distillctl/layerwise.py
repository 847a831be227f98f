"""Layerwise distillation parts, model-agnostic: hidden-state taps, masked MSE, projections, layer pairs.

Nothing here knows about CoCa: layers are module paths (``dict(model.named_modules())[path]``) and
modules/stacks come from a splitter (:class:`distillctl.interfaces.Module`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from distillctl.errors import DistillctlError
from distillctl.interfaces import Module


class StopForward(Exception):
    """Raised by a :class:`HiddenStateTap` with ``stop=True`` once every tapped layer has run (early stop)."""


class HiddenStateTap:
    """Forward hooks on the requested layer paths only; outputs land in ``.outputs[path]``.

    With ``stop=True`` the hook that completes the set raises :class:`StopForward`, so nothing after
    the deepest tapped layer is computed: run the forward inside :meth:`run`, which catches it.

    A block whose forward returns a tuple is stored as its first element (the hidden states ``[B, L, D]``).
    Use as a context manager (hooks are removed on exit) or call :meth:`remove`. Outputs are kept as
    produced (with their autograd graph for a student; run the teacher under ``torch.no_grad()``).
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], *, stop: bool = False) -> None:
        self.paths = list(dict.fromkeys(paths))
        self.stop = stop and bool(self.paths)
        modules = dict(model.named_modules())
        missing = [p for p in self.paths if p not in modules]
        if missing:
            raise DistillctlError(
                f"cannot tap {', '.join(missing[:3])}: no such layer in {type(model).__name__}.",
                hint="Layer paths are names from model.named_modules(), e.g. 'visual.transformer.resblocks.0'.",
            )
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[p].register_forward_hook(self._hook(p)) for p in self.paths]

    def _hook(self, path: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[path] = output[0] if isinstance(output, (tuple, list)) else output
            if self.stop and len(self.outputs) == len(self.paths):
                raise StopForward(path)  # every tapped layer has run: skip the rest of the forward

        return hook

    def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; None when the forward was stopped early (see ``stop``)."""
        try:
            return fn(*args)
        except StopForward:
            return None

    def clear(self) -> None:
        self.outputs.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> HiddenStateTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def masked_mse(
    student_h: torch.Tensor, teacher_h: torch.Tensor, mask: torch.Tensor | None = None, normalize: bool = False
) -> torch.Tensor:
    """Mean over valid positions and channels of ``(s - t)**2``; ``mask`` ``[B, L]`` bool (None = all valid).

    Pad positions are *selected out* before any arithmetic, so they contribute nothing to the value and
    get exactly zero gradient (even if they hold inf/nan). With ``normalize`` the MSE is divided by the
    (detached) mean square of the teacher states at the valid positions, so stacks of different scale
    weigh alike. Computed in float32. Returns a scalar; 0 (with a graph) when no position is valid.
    """
    if student_h.shape != teacher_h.shape:
        raise DistillctlError(
            f"hidden-state shapes differ: student {list(student_h.shape)} vs teacher {list(teacher_h.shape)} "
            "(project the student first when widths differ)."
        )
    s, t = student_h.float(), teacher_h.detach().float()
    if mask is not None:
        mask = mask.to(device=s.device, dtype=torch.bool)
        if mask.shape != s.shape[:-1]:
            raise DistillctlError(f"position mask {list(mask.shape)} does not match hidden states {list(s.shape)}.")
        s, t = s[mask], t[mask]  # [N_valid, D]
    if s.numel() == 0:
        return student_h.sum() * 0.0 if mask is None else s.sum()
    loss = (s - t).pow(2).mean()
    if normalize:
        loss = loss / t.pow(2).mean().clamp_min(1e-12)
    return loss


def projection_key(name: str) -> str:
    """A valid ``nn.ModuleDict`` key for a layer path ('.' is not allowed in module names)."""
    return name.replace(".", "__")


def build_projections(pairs: Mapping[str, tuple[int, int]]) -> nn.ModuleDict:
    """``{name: (d_student, d_teacher)}`` -> ModuleDict of ``nn.Linear(d_s, d_t)`` where the widths differ.

    Keys are ``projection_key(name)``; pairs of equal width get no entry (use the student state as is).
    """
    out = nn.ModuleDict()
    for name, (d_s, d_t) in pairs.items():
        if int(d_s) != int(d_t):
            out[projection_key(name)] = nn.Linear(int(d_s), int(d_t))
    return out


def uniform_layer_map(n_teacher: int, n_student: int) -> list[int]:
    """Student layer i <-> teacher layer ``(i+1)*n_t//n_s - 1`` (the last layer of each block)."""
    if n_student > n_teacher:
        raise DistillctlError(f"a student stack of {n_student} layers cannot be mapped onto {n_teacher} teacher layers.")
    return [(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]


def default_layer_map(teacher_modules: Sequence[Module], student_modules: Sequence[Module]) -> dict[str, dict[str, list[int]]]:
    """The uniform layer map for every module and stack the student has."""
    teacher = {m.name: {s.name: s.depth for s in m.stacks} for m in teacher_modules}
    out: dict[str, dict[str, list[int]]] = {}
    for m in student_modules:
        out[m.name] = {}
        for s in m.stacks:
            n_t = teacher.get(m.name, {}).get(s.name)
            if n_t is None:
                raise DistillctlError(f"the teacher has no stack {s.name!r} in module {m.name!r}.")
            out[m.name][s.name] = uniform_layer_map(n_t, s.depth)
    return out


def layer_pairs(
    teacher_modules: Sequence[Module],
    student_modules: Sequence[Module],
    layer_map: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """``{module: [(student_path, teacher_path), ...]}`` over every stack of every module.

    ``layer_map`` is ``{module: {stack: [teacher index per student layer]}}``; modules or stacks it does
    not name use the uniform map.
    """
    default = default_layer_map(teacher_modules, student_modules)
    teacher = {m.name: {s.name: s for s in m.stacks} for m in teacher_modules}
    out: dict[str, list[tuple[str, str]]] = {}
    for m in student_modules:
        pairs: list[tuple[str, str]] = []
        for s in m.stacks:
            t_stack = teacher[m.name][s.name]
            indices = list((layer_map or {}).get(m.name, {}).get(s.name, default[m.name][s.name]))
            if len(indices) != s.depth:
                raise DistillctlError(
                    f"layer map of {m.name}/{s.name} has {len(indices)} entries for {s.depth} student layers."
                )
            for i, t_idx in enumerate(indices):
                if not 0 <= int(t_idx) < t_stack.depth:
                    raise DistillctlError(
                        f"layer map of {m.name}/{s.name}: teacher layer {t_idx} is out of range 0..{t_stack.depth - 1}."
                    )
                pairs.append((s.layer(i), t_stack.layer(int(t_idx))))
        out[m.name] = pairs
    return out
