"""Generic students, for any family: ``layer-subset`` keeps k of n teacher layers per module.

Nothing here knows a model library. The splitter names the modules and their stacks (layer lists);
the family turns the teacher's config into a shallower one (``family.with_depths``) and builds it
(``family.build``); the kept layers' weights are copied from the teacher by state-dict key, every
other key as is (a depth-only change leaves every other shape alone). Stacks that share one
``nn.ModuleList`` (a ViT's blocks split into early / middle / late) are handled through
``Stack.start``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from distillctl.errors import DistillctlError
from distillctl.interfaces import Module, Splitter, Student, Teacher
from distillctl.torch_utils import model_device


def module_depths(modules: Sequence[Module]) -> dict[str, int]:
    """Layers per module, counted per stack (stacks of one module move together, e.g. CoCa's decoder self/cross)."""
    out = {}
    for m in modules:
        depths = {s.depth for s in m.stacks}
        if len(depths) != 1:
            raise DistillctlError(f"module {m.name!r} has stacks of different depths {sorted(depths)}; cannot subset it.")
        out[m.name] = depths.pop()
    return out


def _student_depth(module: str, n_teacher: int, depth: int, ratio: float) -> int:
    if depth < 0:
        raise DistillctlError(f"student depth of {module}={depth}: a layer count must be positive (0 = keep the teacher's).")
    n = depth if depth > 0 else (max(1, int(n_teacher * ratio + 0.5)) if ratio > 0 else n_teacher)  # half-up
    if n > n_teacher:
        raise DistillctlError(
            f"student {module} depth {n} exceeds the teacher's {n_teacher} layers: a layer-subset student "
            "cannot be deeper than its teacher.",
            hint=f"Set student.depths.{module} to at most {n_teacher} (or use a smaller student.ratio).",
        )
    return n


def _explicit_layers(module: str, value: Any, n_teacher: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise DistillctlError(f"student.layers.{module} must be a non-empty list of teacher layer indices, got {value!r}.")
    idx = list(value)
    if any(not 0 <= i < n_teacher for i in idx):
        raise DistillctlError(f"student.layers.{module}={idx}: indices must be in 0..{n_teacher - 1} (the teacher has {n_teacher}).")
    if any(b <= a for a, b in zip(idx, idx[1:], strict=False)):
        raise DistillctlError(f"student.layers.{module}={idx}: indices must be strictly increasing.")
    return idx


def plan_layer_subset(
    teacher_modules: Sequence[Module], *, ratio: float = 0.0, depths: dict[str, int] | None = None,
    layers: dict[str, Any] | None = None,
) -> dict[str, dict[str, list[int]]]:
    """The layer map ``{module: {stack: [kept teacher layer per student layer]}}``, without building anything.

    Per module: ``layers[module]`` (explicit indices), else ``depths[module]`` layers, else
    ``round(n * ratio)`` (half-up), else all; kept layers are the last of each uniform block.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
        raise DistillctlError(f"student.ratio={ratio}: must be in (0, 1] (0 = use the per-module depths).")
    layers, depths = dict(layers or {}), dict(depths or {})
    names = [m.name for m in teacher_modules]
    for what, given in (("layers", layers), ("depths", depths)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise DistillctlError(f"student.{what}: unknown module(s) {', '.join(unknown)} (valid: {', '.join(names)}).")
    n_teacher = module_depths(teacher_modules)
    layer_map: dict[str, dict[str, list[int]]] = {}
    for m in teacher_modules:
        n_t = n_teacher[m.name]
        asked = int(depths.get(m.name, 0) or 0)
        if m.name in layers:
            idx = _explicit_layers(m.name, layers[m.name], n_t)
            if asked not in (0, len(idx)):
                raise DistillctlError(f"student depth of {m.name} ({asked}) disagrees with student.layers.{m.name} "
                                      f"({len(idx)} layers); set one.")
        else:
            n_s = _student_depth(m.name, n_t, asked, float(ratio))
            idx = [(i + 1) * n_t // n_s - 1 for i in range(n_s)]
        layer_map[m.name] = {s.name: list(idx) for s in m.stacks}
    return layer_map


def kept_index_map(teacher_modules: Sequence[Module], layer_map: dict[str, dict[str, list[int]]]) -> dict[str, dict[int, int]]:
    """``{ModuleList path: {student index: teacher index}}`` in global ``nn.ModuleList`` indices.

    The student's stacks that share a path are laid out in module order from index 0."""
    out: dict[str, dict[int, int]] = {}
    for m in teacher_modules:
        for s in m.stacks:
            mapping = out.setdefault(s.name, {})
            start = len(mapping)  # the student's next free index in this ModuleList
            for i, t_idx in enumerate(layer_map[m.name][s.name]):
                mapping[start + i] = s.start + int(t_idx)
    return out


def copy_kept_layers(teacher: torch.nn.Module, student: torch.nn.Module, index_map: dict[str, dict[int, int]]) -> None:
    """Load the student (strict) from the teacher: kept stack layers from their teacher index, every other key as is."""
    pat = re.compile(r"^(" + "|".join(map(re.escape, sorted(index_map, key=len, reverse=True))) + r")\.(\d+)\.(.*)$")
    tsd = teacher.state_dict()
    new = {}
    for k in student.state_dict():
        m = pat.match(k)
        src = f"{m[1]}.{index_map[m[1]][int(m[2])]}.{m[3]}" if m else k
        if src not in tsd:
            raise DistillctlError(f"layer-subset: the teacher has no weight {src!r} for the student's {k!r}.")
        new[k] = tsd[src].detach().clone()
    student.load_state_dict(new, strict=True)


def layer_subset_student(
    teacher: Teacher, splitter: Splitter, *, family: Any, ratio: float = 0.0, depths: dict[str, int] | None = None,
    layers: dict[str, Any] | None = None,
) -> Student:
    """Keep k of n teacher layers per module (weights copied from the kept layers, everything else too)."""
    if not hasattr(family, "with_depths"):
        raise DistillctlError(f"the {family.name!r} family cannot build shallower models (no with_depths); "
                              "use a student builder of that family's plugin.")
    t_modules = splitter.modules(teacher.model)
    layer_map = plan_layer_subset(t_modules, ratio=ratio, depths=depths, layers=layers)
    cfg = family.with_depths(teacher.model_config, {m: len(next(iter(v.values()))) for m, v in layer_map.items()})
    device = model_device(teacher.model)
    model = family.build(cfg, device)
    if device.type != "meta":
        copy_kept_layers(teacher.model, model, kept_index_map(t_modules, layer_map))
    model.train()
    kept = ", ".join(f"{m} {len(next(iter(v.values())))}" for m, v in layer_map.items())
    return Student(model=model, model_config=cfg, layer_map=layer_map, description=f"layer-subset of {teacher.name} ({kept})")


def config_student_from(
    teacher: Teacher, splitter: Splitter, cfg: dict[str, Any], source: str, *, build: Any, layers_key: dict[str, str],
) -> Student:
    """A random-init student from a model config (``build(cfg, device)``), checked before it is built for real.

    The architecture is built on the meta device first: the splitter must pair it with the teacher and
    no module may be deeper than the teacher's (``layers_key`` names each module's depth key for the hint).
    """
    from distillctl.layerwise import default_layer_map

    device = model_device(teacher.model)
    model = build(cfg, "meta")
    splitter.check_compatible(teacher.model, model)  # refuse before paying for a real build
    t_modules, s_modules = splitter.modules(teacher.model), splitter.modules(model)
    t_depth, s_depth = module_depths(t_modules), module_depths(s_modules)
    for name, n_s in s_depth.items():
        if n_s > t_depth.get(name, 0):
            raise DistillctlError(
                f"student {name} depth {n_s} exceeds the teacher's {t_depth.get(name, 0)} layers: the layer map pairs "
                "each student layer with a distinct teacher layer.",
                hint=f"Set {layers_key.get(name, name)}.layers to at most {t_depth.get(name, 0)} in student.config.",
            )
    layer_map = default_layer_map(t_modules, s_modules)
    if device.type != "meta":
        model = build(cfg, device)
    model.train()
    return Student(model=model, model_config=cfg, layer_map=layer_map, description=f"config student ({source})")


__all__ = ["config_student_from", "copy_kept_layers", "kept_index_map", "layer_subset_student", "module_depths", "plan_layer_subset"]
