"""Built-in students (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


def layer_subset(
    teacher: Any,
    splitter: Any,
    ratio: float = 0.0,
    depths: dict | None = None,
    layers: dict | None = None,
    vision: int = 0,
    text: int = 0,
    multimodal: int = 0,
) -> Any:
    """Keep k of n teacher layers per module, any family; weights copied (ratio r = round(n*r); depths/layers per module)."""
    from distillctl.plugins import registry
    from distillctl.students import layer_subset_student

    # vision / text / multimodal: shorthands for depths of modules with those names (CoCa, CLIP)
    named = {k: v for k, v in (("vision", vision), ("text", text), ("multimodal", multimodal)) if v}
    family = registry("family").create(teacher.family)
    return layer_subset_student(teacher, splitter, family=family, ratio=ratio, depths={**named, **(depths or {})},
                                layers=layers)


def config(teacher: Any, splitter: Any, config: str | dict | None = None) -> Any:
    """Any open_clip CoCa or CLIP config (the teacher's family; JSON file, model name or table), random init; widths may differ."""
    from distillctl.errors import DistillctlError

    if teacher.family == "clip":
        from distillctl.clip.students import config_student as clip_config_student

        return clip_config_student(teacher, splitter, config=config)
    if teacher.family == "coca":
        from distillctl.coca.students import config_student as coca_config_student

        return coca_config_student(teacher, splitter, config=config)
    raise DistillctlError(
        f"student 'config' builds open_clip CoCa and CLIP students; teacher {teacher.name!r} is of family "
        f"{teacher.family!r}.", hint="Use --student layer-subset, or a student the teacher's plugin registers.")


@hookimpl
def register_students(register: Register) -> None:
    register("layer-subset", layer_subset)
    register("config", config)
