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

Every ``register_*`` hook is called once, when the plugin manager loads; a hook that raises marks its
plugin broken (``distillctl plugins`` lists it) and the others keep working. A factory (or a method of
what it returns) raises :class:`distillctl.DistillctlError` subclasses for bad input; anything else
becomes one ``PluginError`` line naming the component, the plugin and its version
(:func:`distillctl.registry.call_plugin`). The author's guide is ``plugins/README.md``; the
conformance checks are :mod:`distillctl.testing`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("distillctl")
hookimpl = pluggy.HookimplMarker("distillctl")

PLUGIN_API = "2.0"
"""The version of this contract, ``MAJOR.MINOR``: MAJOR changes when a plugin written for the previous
one may break (0.1.x was API 1; 0.2.0 is API 2, see the CHANGELOG's "Breaking (plugin API)"), MINOR when
hooks or optional members are added.

A plugin declares the API it needs with a module attribute on its entry-point object::

    DISTILLCTL_PLUGIN_API = "2.0"       # in the module the entry point names

It is loaded when its MAJOR equals this one's and its MINOR is not newer; otherwise it is refused
(listed as broken by ``distillctl plugins``, one line saying which API it needs and which this
distillctl provides). A plugin that declares nothing is loaded as before.
"""

Register = Callable[..., Any]


@hookspec
def register_teachers(register: Register) -> None:
    """Register teacher factories.

    Called once when the plugin manager loads. Factory signature::

        factory(*, weights: str | None = None, device: str = "cpu", **options) -> Teacher

    ``weights`` is the user's ``--teacher-weights`` (a path, ``local-dir:DIR``, a pretrained tag,
    ``random``) or None for the teacher's default. Returns a :class:`distillctl.interfaces.Teacher`
    that names the registered ``family`` and ``splitter`` understanding the model (both required).

    Optional: ``factory.preflight(weights=..., **options)``, a cheap check that imports no torch,
    called before anything heavy is imported or built, so that weights that cannot be had fail
    in a second with one line (the built-in ``coca-large`` uses it for offline tags). A prefix
    entry's preflight also gets ``variant=`` (``timm:vit_small`` -> ``variant="vit_small"``).

    Optional: ``factory.family = "NAME"`` / ``factory.splitter = "NAME"``, the family and splitter its
    bundles name, so that options of ``[family]`` / ``[splitter]`` ``name = "auto"`` are checked against
    them before anything is built.
    """


@hookspec
def register_students(register: Register) -> None:
    """Register student builders.

    Factory signature: ``factory(*, teacher: Teacher, splitter: Splitter, **options) -> Student``.
    Called in ``distill`` after the teacher and splitter are built (and by ``inspect --student``, with a
    ``meta``-device teacher). The factory builds a smaller, trainable model on the teacher's device and
    returns :class:`distillctl.interfaces.Student`: the model, its ``model_config`` (what the family
    exports and rebuilds) and its ``layer_map`` (``{module: {stack: [teacher layer per student layer]}}``;
    what it leaves out uses the uniform map).
    """


@hookspec
def register_splitters(register: Register) -> None:
    """Register module splitters.

    Factory signature: ``factory(**options) -> Splitter`` (:class:`distillctl.interfaces.Splitter`).
    A splitter names the modules of a model (e.g. ``vision``, ``text``, ``multimodal``) and lists their
    layers; ``check_compatible(teacher, student)`` runs before training. The layer contract: every
    layer path names a submodule whose output (or its first element) is ``[B, L, D]`` or
    ``[B, D, H, W]``, and paired teacher/student layers have the same ``L``. Used when ``[splitter] name``
    names it, or when a teacher names it (``Teacher.splitter``, ``auto``).
    """


@hookspec
def register_policies(register: Register) -> None:
    """Register selection policies.

    Factory signature: ``factory(*, arms: list[tuple[str, ...]], seed: int, **options) -> Policy``.
    Policies are pure Python (no torch) so ``simulate`` can run them against synthetic bandits.
    ``select(episode) -> int`` picks an index into ``arms``; ``update(arm, reward)``; ``posterior()``
    (one dict per arm); ``state_dict()`` is JSON-serialisable and ``load_state_dict`` of it continues
    bit-exactly (``--resume``).
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register data sources.

    Factory signature: ``factory(*, split: str = "train", **options) -> Dataset``. A dataset is a
    sized, indexable collection of :class:`distillctl.interfaces.Sample` (image + caption + label) with
    ``describe()``; an unusable item raises :class:`distillctl.data.SkipItem` (skipped and counted).
    ``distill`` asks for ``train`` and ``val`` (the probe set), evaluation for ``eval.split``.
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators.

    Factory signature: ``factory(**options) -> Evaluator`` (options from ``eval.options``).
    ``evaluator.evaluate(bundle, ctx)`` (:class:`distillctl.interfaces.EvalContext`: the family, the
    dataset, device, samples, the teacher) returns a flat ``dict[str, float]`` of metrics, once for the
    student and once for the teacher; optional ``evaluate_pair(student, teacher, ctx)`` and
    ``applies_to(family) -> bool``. Called at the end of ``distill`` and by ``eval``.
    """


@hookspec
def register_families(register: Register) -> None:
    """Register model families.

    Factory signature: ``factory(**options) -> Family`` (:class:`distillctl.interfaces.Family`).
    A family owns everything model-specific: batch -> inputs, the forward, the task loss, the
    logit-level distillation terms, position masks, export and reload of a student, and the forwards
    evaluators use. A teacher names its family (``Teacher.family``); the ``[family]`` config section
    picks another one or sets the family's options (e.g. ``caption_weight`` for ``coca``). ``eval``
    finds the family of an export from the ``family`` entry ``Family.export`` writes into its metadata.
    """


@hookspec
def register_trackers(register: Register) -> None:
    """Register experiment trackers (``--report-to NAME``, ``train.report_to``).

    Factory signature: ``factory(**options) -> Tracker`` (options from ``train.report_options.NAME``).
    Called at start-up, on the main process only, before any model is built: import the tracking library
    here and raise :class:`distillctl.trackers.TrackerError` (one line, with the install command) when it
    is missing. Write nothing until ``start``. The tracker:

    * ``name: str``
    * ``start(*, out_dir, run_name, config)`` -- open the run, log ``config`` (the resolved run config)
      as hyperparameters; raising here (no login, server unreachable) stops the run in one line, still
      before any model is built. Local logs go under ``out_dir`` unless an option says otherwise.
    * ``log_metrics(metrics: dict[str, float], step: int)`` -- called in step order: per-step ``train/*``
      terms and ``train/lr`` (delivered once per episode, each at its own step), per-episode ``episode/*``,
      ``probe/*``, ``posterior/<arm>/*``, and at the end ``eval/student/*``, ``eval/teacher/*``, ``sizes/*``.
    * ``finish(*, failed: bool)`` -- close the run (also when the run failed).
    * optional: ``log_artifact(path)`` (``report.html``, ``report.json``), ``log_summary(metrics)``,
      ``log_text(tag, text, step)``, ``local_dirs() -> list[Path]`` (folders under ``out_dir`` it writes:
      kept when a run fails), ``location`` (shown at start-up).

    After ``start``, an exception from a tracker is one warning line and the tracker is dropped: a tracker
    never loses a run. Conformance: :func:`distillctl.testing.check_tracker`.
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
