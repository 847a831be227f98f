"""CoCa students: ``config`` (any CoCa cfg, random init). ``layer-subset`` is generic (:mod:`distillctl.students`).

A student is built on the teacher's device; a teacher on the ``meta`` device (``distillctl inspect``)
gives a meta student and no weights are copied.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from distillctl.coca.models import (
    build_coca,
    config_problems,
    normalize_config,
)
from distillctl.coca.splitter import MODULE_STACKS
from distillctl.config import merge
from distillctl.errors import ConfigError, DistillctlError
from distillctl.interfaces import Splitter, Student, Teacher
from distillctl.students import config_student_from

# module name -> the cfg section holding its layer count
MODULE_CFG = {"vision": "vision_cfg", "text": "text_cfg", "multimodal": "multimodal_cfg"}


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
    """Any open_clip CoCa config (JSON file, open_clip name or table; partial tables patch the teacher's), random init.

    The built-in ``config`` student calls this for a ``coca`` teacher (:func:`distillctl.clip.students.config_student`
    for a ``clip`` one)."""
    cfg, source = _load_student_config(config, teacher.model_config)
    problems = config_problems(cfg)
    if problems:
        raise ConfigError([f"student.config ({source}): {p}" for p in problems])
    return config_student_from(teacher, splitter, cfg, source, build=build_coca, layers_key=MODULE_CFG)


__all__ = ["MODULE_CFG", "MODULE_STACKS", "config_student"]
