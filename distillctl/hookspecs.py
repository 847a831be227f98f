"""The plugin contract: pluggy markers and every hook distillctl calls.

A plugin is any module or object with functions marked ``@distillctl.hookimpl`` whose names
match the specs below. Third-party plugins are found through the entry-point group
``distillctl``::

    [project.entry-points.distillctl]
    my_policy = "my_package.plugin"

Register hooks receive a ``register`` callback::

    @hookimpl
    def register_policies(register):
        register("greedy", make_greedy_policy, aliases=("g",), summary="Always the best arm so far.")

``register(name, factory, *, aliases=(), summary=None)``: ``summary`` defaults to the first line of
the factory's docstring. A name ending in ``:`` is a prefix entry (``open-clip:`` answers
``open-clip:coca_ViT-B-32`` and the factory gets ``variant=...``). The factory's keyword
parameters are the component's options: presets and ``--set`` values are checked against them.
Built-in components register through exactly these hooks (``distillctl.default_plugins``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("distillctl")
hookimpl = pluggy.HookimplMarker("distillctl")

Register = Callable[..., Any]


@hookspec
def register_teachers(register: Register) -> None:
    """Register teacher factories.

    Called once when the plugin manager loads. Factory signature::

        factory(*, weights: str | None = None, device: str = "cpu", **options) -> Teacher

    ``weights`` is the user's ``--teacher-weights`` (a path, ``local-dir:DIR``, a pretrained tag,
    ``random``) or None for the teacher's default. Returns a :class:`distillctl.interfaces.Teacher`.

    Optional: ``factory.preflight(weights=..., **options)``, a cheap check that imports no torch,
    called before anything heavy is imported or built, so that weights that cannot be had fail
    in a second with one line (the built-in ``coca-large`` uses it for offline tags).
    """


@hookspec
def register_students(register: Register) -> None:
    """Register student builders.

    Factory signature: ``factory(*, teacher: Teacher, splitter: Splitter, **options) -> Student``.
    The factory builds a smaller model from the teacher and returns its layer map.
    """


@hookspec
def register_splitters(register: Register) -> None:
    """Register module splitters.

    Factory signature: ``factory(**options) -> Splitter``. A splitter names the modules of a model
    (e.g. ``vision``, ``text``, ``multimodal``), lists their layers and builds position masks.
    """


@hookspec
def register_policies(register: Register) -> None:
    """Register selection policies.

    Factory signature: ``factory(*, arms: list[tuple[str, ...]], seed: int, **options) -> Policy``.
    Policies are pure Python (no torch) so ``simulate`` can run them against synthetic bandits.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register data sources.

    Factory signature: ``factory(*, split: str = "train", **options) -> Dataset``. A dataset is a
    sized, indexable collection of :class:`distillctl.interfaces.Sample` (image + caption + label).
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators.

    Factory signature: ``factory(**options) -> Evaluator``; ``evaluator.evaluate(model, ...)``
    returns a flat ``dict[str, float]`` of metrics.
    """


@hookspec
def register_families(register: Register) -> None:
    """Register model families.

    Factory signature: ``factory(**options) -> Family`` (:class:`distillctl.interfaces.Family`).
    A family owns everything model-specific: batch -> inputs, the forward, the task loss, the
    logit-level distillation terms, position masks, export and reload of a student, and the forwards
    evaluators use. A teacher names its family (``Teacher.family``); the ``[family]`` config section
    picks another one or sets the family's options (e.g. ``caption_weight`` for ``coca``).
    """


@hookspec
def on_episode_end(episode: int, arm: tuple[str, ...], reward: float, probe_loss: float, state: dict[str, Any]) -> None:
    """Observer: called after every distillation episode (on the main process only).

    ``state`` is a read-only snapshot: step, losses of the episode, policy posterior.
    Return value is ignored.
    """


@hookspec
def on_run_end(out_dir: str, report: dict[str, Any]) -> None:
    """Observer: called once when a run has written its artifacts (main process only).

    ``report`` is the content of ``report.json``. Return value is ignored.
    """
