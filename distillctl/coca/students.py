"""CoCa students: ``layer-subset`` (keep k of n teacher layers, weights copied) and ``config`` (any CoCa cfg).

A student is built on the teacher's device; a teacher on the ``meta`` device (``distillctl inspect``)
gives a meta student and no weights are copied.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch

from distillctl.coca.models import (
    build_coca,
    config_problems,
    init_decoder_projection,
    model_device,
    normalize_config,
)
from distillctl.coca.splitter import MODULE_STACKS
from distillctl.config import merge
from distillctl.errors import ConfigError, DistillctlError
from distillctl.interfaces import Module, Splitter, Student, Teacher
from distillctl.layerwise import default_layer_map

# module name -> the cfg section holding its layer count
MODULE_CFG = {"vision": "vision_cfg", "text": "text_cfg", "multimodal": "multimodal_cfg"}


def _module_depths(modules: list[Module]) -> dict[str, int]:
    """Layers per module, counted per stack (the decoder's self/cross stacks move together)."""
    out = {}
    for m in modules:
        depths = {s.depth for s in m.stacks}
        if len(depths) != 1:
            raise DistillctlError(f"module {m.name!r} has stacks of different depths {sorted(depths)}; cannot subset it.")
        out[m.name] = depths.pop()
    return out


def _student_depth(module: str, n_teacher: int, depth: int, ratio: float, option: str) -> int:
    if depth < 0:
        raise DistillctlError(f"student.{option}={depth}: a layer count must be positive (0 = keep the teacher's).")
    n = depth if depth > 0 else (max(1, int(n_teacher * ratio + 0.5)) if ratio > 0 else n_teacher)  # half-up
    if n > n_teacher:
        raise DistillctlError(
            f"student {module} depth {n} exceeds the teacher's {n_teacher} layers: a layer-subset student "
            "cannot be deeper than its teacher.",
            hint=f"Set student.{option} to at most {n_teacher} (or use a smaller student.ratio).",
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
    teacher_cfg: dict[str, Any],
    teacher_modules: list[Module],
    *,
    vision: int = 0,
    text: int = 0,
    multimodal: int = 0,
    ratio: float = 0.0,
    layers: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, list[int]]]]:
    """The student's open_clip cfg and layer map, without building anything."""
    if not 0.0 <= float(ratio) <= 1.0:
        raise DistillctlError(f"student.ratio={ratio}: must be in (0, 1] (0 = use the per-module depths).")
    layers = dict(layers or {})
    unknown = sorted(set(layers) - set(MODULE_CFG))
    if unknown:
        raise DistillctlError(f"student.layers: unknown module(s) {', '.join(unknown)} (valid: {', '.join(MODULE_CFG)}).")
    n_teacher = _module_depths(teacher_modules)
    asked = {"vision": vision, "text": text, "multimodal": multimodal}
    cfg = normalize_config(teacher_cfg)
    layer_map: dict[str, dict[str, list[int]]] = {}
    for m in teacher_modules:
        n_t = n_teacher[m.name]
        if m.name in layers:
            idx = _explicit_layers(m.name, layers[m.name], n_t)
            if asked.get(m.name, 0) not in (0, len(idx)):
                raise DistillctlError(
                    f"student.{m.name}={asked[m.name]} disagrees with student.layers.{m.name} ({len(idx)} layers); set one."
                )
        else:
            n_s = _student_depth(m.name, n_t, int(asked.get(m.name, 0)), float(ratio), m.name)
            idx = [(i + 1) * n_t // n_s - 1 for i in range(n_s)]
        layer_map[m.name] = {s.name: list(idx) for s in m.stacks}
        cfg[MODULE_CFG[m.name]]["layers"] = len(idx)
    return cfg, layer_map


def copy_kept_layers(teacher: torch.nn.Module, student: torch.nn.Module, layer_map: dict[str, dict[str, list[int]]]) -> None:
    """Load the student (strict) from the teacher: kept stack layers from their teacher index, the rest as is."""
    keep = {stack: idx for stacks in layer_map.values() for stack, idx in stacks.items()}
    pat = re.compile(r"^(" + "|".join(map(re.escape, sorted(keep, key=len, reverse=True))) + r")\.(\d+)\.(.*)$")
    tsd = teacher.state_dict()
    new = {}
    for k in student.state_dict():
        m = pat.match(k)
        src = f"{m[1]}.{keep[m[1]][int(m[2])]}.{m[3]}" if m else k
        new[k] = tsd[src].detach().clone()
    student.load_state_dict(new, strict=True)


def layer_subset_student(
    teacher: Teacher,
    splitter: Splitter,
    vision: int = 0,
    text: int = 0,
    multimodal: int = 0,
    ratio: float = 0.0,
    layers: dict | None = None,
) -> Student:
    """Keep k of n teacher layers per module (weights copied from the kept layers, everything else too)."""
    t_modules = splitter.modules(teacher.model)
    cfg, layer_map = plan_layer_subset(
        teacher.model_config, t_modules, vision=vision, text=text, multimodal=multimodal, ratio=ratio, layers=layers
    )
    device = model_device(teacher.model)
    model = build_coca(cfg, device, init_decoder=False)
    if device.type != "meta":
        copy_kept_layers(teacher.model, model, layer_map)
    model.train()
    depths = ", ".join(f"{m} {len(next(iter(v.values())))}" for m, v in layer_map.items())
    return Student(model=model, model_config=cfg, layer_map=layer_map, description=f"layer-subset of {teacher.name} ({depths})")


def _load_student_config(config: str | dict | None, teacher_cfg: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if config is None:
        raise DistillctlError(
            "student 'config' needs student.config: a JSON file (open_clip CoCa model cfg) or an inline table.",
            hint='E.g. --set student.config=student.json, or [student.config.vision_cfg] layers = 6 in a preset.',
        )
    if isinstance(config, str):
        p = Path(config).expanduser()
        if p.suffix == ".json" or p.exists():
            from distillctl.coca.models import read_config_file

            cfg, _ = read_config_file(p)
            return cfg, str(p)
        import open_clip

        if open_clip.get_model_config(config) is not None:
            from distillctl.coca.models import builtin_model_config

            return builtin_model_config(config), config
        raise DistillctlError(f"student.config={config!r}: no such JSON file and not an open_clip model name.")
    if not isinstance(config, dict):
        raise DistillctlError(f"student.config must be a path or a table, got {type(config).__name__}.")
    cfg = copy.deepcopy(dict(config.get("model_cfg", config)))
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg", "multimodal_cfg")):
        # a partial table changes only what it names
        cfg = merge(teacher_cfg, cfg)
    return normalize_config(cfg), "inline config"


def config_student(teacher: Teacher, splitter: Splitter, config: str | dict | None = None) -> Student:
    """Any open_clip CoCa config (JSON file, open_clip name or table; partial tables patch the teacher's), random init."""
    cfg, source = _load_student_config(config, teacher.model_config)
    problems = config_problems(cfg)
    if problems:
        raise ConfigError([f"student.config ({source}): {p}" for p in problems])
    device = model_device(teacher.model)
    model = build_coca(cfg, "meta")
    splitter.check_compatible(teacher.model, model)  # refuse before paying for a real build
    t_modules, s_modules = splitter.modules(teacher.model), splitter.modules(model)
    t_depth, s_depth = _module_depths(t_modules), _module_depths(s_modules)
    for name, n_s in s_depth.items():
        if n_s > t_depth.get(name, 0):
            raise DistillctlError(
                f"student {name} depth {n_s} exceeds the teacher's {t_depth.get(name, 0)} layers: the layer map pairs "
                "each student layer with a distinct teacher layer.",
                hint=f"Set {MODULE_CFG[name]}.layers to at most {t_depth.get(name, 0)} in student.config.",
            )
    layer_map = default_layer_map(t_modules, s_modules)
    if device.type != "meta":
        model = build_coca(cfg, device, init_decoder=False)
        init_decoder_projection(model)
    model.train()
    return Student(model=model, model_config=cfg, layer_map=layer_map, description=f"config student ({source})")


__all__ = [
    "MODULE_STACKS",
    "config_student",
    "copy_kept_layers",
    "layer_subset_student",
    "plan_layer_subset",
]
