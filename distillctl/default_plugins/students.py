"""Built-in students (registered through the same hook as any third-party plugin)."""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


def layer_subset(
    teacher: Any,
    splitter: Any,
    vision: int = 0,
    text: int = 0,
    multimodal: int = 0,
    ratio: float = 0.0,
    layers: dict | None = None,
) -> Any:
    """Keep k of n teacher layers per module; weights copied from the kept layers (0 = keep all, ratio r = round(n*r))."""
    from distillctl.coca.students import layer_subset_student

    return layer_subset_student(
        teacher, splitter, vision=vision, text=text, multimodal=multimodal, ratio=ratio, layers=layers
    )


def config(teacher: Any, splitter: Any, config: str | dict | None = None) -> Any:
    """Any open_clip CoCa config (JSON file, model name or table), random init; widths may differ."""
    from distillctl.coca.students import config_student

    return config_student(teacher, splitter, config=config)


@hookimpl
def register_students(register: Register) -> None:
    register("layer-subset", layer_subset)
    register("config", config)
