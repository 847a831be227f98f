"""distillctl-toy-family: a whole model family as a plugin (family, teacher, student, splitter).

Registered through the ``distillctl`` entry-point group (see ``pyproject.toml``); nothing in
distillctl knows about it. Module-level imports are cheap (no torch): the factories import the
model code when they are called, so ``distillctl plugins`` stays fast.
"""

from __future__ import annotations

from typing import Any

from distillctl import hookimpl

DISTILLCTL_PLUGIN_API = "2.0"  # the plugin API this package was written for (distillctl 0.2)


def _family(kd_weight: float = 1.0) -> Any:
    """Toy two-tower family (plain torch): contrastive task loss, similarity-matrix KD."""
    from distillctl_toy_family.family import toy_family

    return toy_family(kd_weight=kd_weight)


def _teacher(weights: str | None = None, device: str = "cpu", width: int = 64, layers: int = 4) -> Any:
    """Toy two-tower teacher (seeded random init, 64 px, shapes vocabulary)."""
    from distillctl_toy_family.family import toy_teacher

    return toy_teacher(weights=weights, device=device, width=width, layers=layers)


def _student(teacher: Any, splitter: Any, ratio: float = 0.5) -> Any:
    """Half the blocks of each toy tower, weights copied from the kept teacher blocks."""
    from distillctl_toy_family.family import toy_half

    return toy_half(teacher, splitter, ratio=ratio)


def _splitter() -> Any:
    """Toy two-tower model: image / text blocks."""
    from distillctl_toy_family.family import toy_splitter

    return toy_splitter()


@hookimpl
def register_families(register: Any) -> None:
    register("toy", _family)


@hookimpl
def register_teachers(register: Any) -> None:
    register("toy", _teacher)


@hookimpl
def register_students(register: Any) -> None:
    register("toy-half", _student)


@hookimpl
def register_splitters(register: Any) -> None:
    register("toy", _splitter)
