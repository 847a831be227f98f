"""CLIP students: ``config`` (any open_clip CLIP cfg, random init). ``layer-subset`` is generic
(:mod:`distillctl.students`). Reached through the built-in ``config`` student when the teacher's family is ``clip``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from distillctl.clip.family import MODULE_CFG
from distillctl.clip.models import build_clip, config_problems, is_clip_config
from distillctl.config import merge
from distillctl.errors import ConfigError, DistillctlError
from distillctl.interfaces import Splitter, Student, Teacher
from distillctl.openclip.config import open_clip_config
from distillctl.students import config_student_from


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
    return config_student_from(teacher, splitter, cfg, source, build=build_clip, layers_key=MODULE_CFG)



__all__ = ["config_student"]
