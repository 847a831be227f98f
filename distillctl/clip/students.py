"""CLIP students: ``config`` (any open_clip CLIP cfg, random init). ``layer-subset`` is generic
(:mod:`distillctl.students`). Reached through the built-in ``config`` student when the teacher's family is ``clip``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from distillctl.clip.family import MODULE_CFG
from distillctl.clip.models import build_clip, config_problems, is_clip_config, model_device, open_clip_config
from distillctl.config import merge
from distillctl.errors import ConfigError, DistillctlError
from distillctl.interfaces import Splitter, Student, Teacher
from distillctl.layerwise import default_layer_map
from distillctl.students import module_depths


def _load_student_config(config: str | dict | None, teacher_cfg: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if config is None:
        raise DistillctlError(
            "student 'config' needs student.config: a JSON file (open_clip CLIP model cfg), an open_clip model name "
            "or an inline table.",
            hint="E.g. --set student.config=student.json, or [student.config.vision_cfg] layers = 6 in a preset.",
        )
    if isinstance(config, str):
        cfg, _, source = open_clip_config(config)
        if not is_clip_config(cfg):
            raise ConfigError([f"student.config ({source}): not a CLIP config (the teacher is a CLIP)"])
        return cfg, str(Path(source)) if Path(source).exists() else source
    if not isinstance(config, dict):
        raise DistillctlError(f"student.config must be a path or a table, got {type(config).__name__}.")
    # an inline table patches the teacher's cfg: what it does not name (image size, patch, context, vocab)
    # stays the teacher's, so that hidden states and the tokenizer still pair up
    cfg = merge(teacher_cfg, copy.deepcopy(dict(config.get("model_cfg", config))))
    return cfg, "inline config"


def config_student(teacher: Teacher, splitter: Splitter, config: str | dict | None = None) -> Student:
    """Any open_clip CLIP config (JSON file or open_clip name as is; an inline table patches the teacher's), random init."""
    cfg, source = _load_student_config(config, teacher.model_config)
    problems = config_problems(cfg)
    if problems:
        raise ConfigError([f"student.config ({source}): {p}" for p in problems])
    device = model_device(teacher.model)
    model = build_clip(cfg, "meta")
    splitter.check_compatible(teacher.model, model)  # refuse before paying for a real build
    t_modules, s_modules = splitter.modules(teacher.model), splitter.modules(model)
    t_depth, s_depth = module_depths(t_modules), module_depths(s_modules)
    for name, n_s in s_depth.items():
        if n_s > t_depth.get(name, 0):
            raise DistillctlError(
                f"student {name} depth {n_s} exceeds the teacher's {t_depth.get(name, 0)} layers: the layer map pairs "
                "each student layer with a distinct teacher layer.",
                hint=f"Set {MODULE_CFG[name]}.layers to at most {t_depth.get(name, 0)} in student.config.",
            )
    layer_map = default_layer_map(t_modules, s_modules)
    if device.type != "meta":
        model = build_clip(cfg, device)
    model.train()
    return Student(model=model, model_config=cfg, layer_map=layer_map, description=f"config student ({source})")


__all__ = ["config_student"]
