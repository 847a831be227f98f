"""The conformance kit: checks any plugin component can be run through, and tiny fixtures for them.

Plugin authors import this in their own tests (pytest or not); every built-in passes it
(``tests/test_testing_kit.py``)::

    from distillctl import testing

    def test_my_policy():
        testing.check_policy(make_greedy)                                   # select/update/posterior/state_dict

    def test_my_dataset(tmp_path):
        testing.check_dataset(my_dataset, path=str(testing.tiny_csv(tmp_path)))

    def test_my_family(tmp_path):
        teacher = my_teacher(device="cpu")
        testing.check_triple(my_teacher, my_student, my_splitter, MyFamily())  # the layer contract
        testing.check_family(MyFamily(), teacher, splitter=my_splitter(), tmp_dir=tmp_path)
        testing.check_evaluator(retrieval, MyFamily(), teacher, testing.tiny_shapes())

    def test_my_tracker(tmp_path):
        testing.check_tracker(make_my_tracker, tmp_path / "out", project="test")  # start/log/finish

    def test_my_components_distill(tmp_path, use_plugins):                    # the real engine, 2 episodes
        report = testing.run_tiny_distill(tmp_path / "run", teacher="mine", student="mine-small")

Every ``check_*`` raises :class:`AssertionError` with a message naming the component and what broke
(a plugin that raises something else fails with that exception, as pytest shows it). Nothing here
imports torch when the module is imported; the checks import it when they run.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import pickle
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillctl.errors import DistillctlError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from distillctl.interfaces import Teacher

__all__ = [
    "TINY_DISTILL_OVERRIDES",
    "check_dataset",
    "check_evaluator",
    "check_family",
    "check_plugin",
    "check_policy",
    "check_tracker",
    "check_triple",
    "registered",
    "run_tiny_distill",
    "tiny_batch",
    "tiny_coco",
    "tiny_csv",
    "tiny_folder",
    "tiny_shapes",
]

ARMS: list[tuple[str, ...]] = [("vision",), ("text",), ("multimodal",), ("vision", "text")]


@contextlib.contextmanager
def registered(*plugin_objects: Any, include_entry_points: bool = False) -> Iterator[Any]:
    """Make the built-ins plus ``plugin_objects`` (your plugin module) the process-wide plugins for the
    block, then restore what was there; yields the loaded ``Plugins``. Whatever else is installed is left
    out unless ``include_entry_points``, so your tests cannot depend on it::

        import my_plugin
        with testing.registered(my_plugin):
            testing.run_tiny_distill(tmp_path / "run", teacher="mine", student="mine-half")

    A plugin that fails to load here fails the test, naming it (not a broken-plugin line to overlook).
    """
    from distillctl import plugins

    previous = plugins._CACHE
    loaded = plugins.load_plugins(include_entry_points=include_entry_points, extra=plugin_objects)
    if loaded.broken:
        raise AssertionError("; ".join(b.line() for b in loaded.broken))
    plugins.reset_plugins(loaded)
    try:
        yield loaded
    finally:
        plugins.reset_plugins(previous)


def _fail(what: str, message: str) -> AssertionError:
    return AssertionError(f"{what}: {message}")


def _check(cond: Any, what: str, message: str) -> None:
    if not cond:
        raise _fail(what, message)


def _label(obj: Any, kind: str) -> str:
    name = getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return f"{kind} {name!r}"


# =========================================================================== fixtures
def tiny_shapes(n: int = 16, *, split: str = "val", image_size: int = 64, seed: int = 0) -> Any:
    """A ``shapes`` dataset of ``n`` items (procedural, offline, 64 px by default)."""
    from distillctl.data.shapes import ShapesDataset

    return ShapesDataset(split=split, image_size=image_size, seed=seed, length=n)


def _images(root: Path, n: int, image_size: int, seed: int) -> list[tuple[str, str, str]]:
    """Write ``n`` shapes images under ``root``; ``(file name, caption, label)`` per image."""
    from distillctl.data.shapes import caption_of, generate

    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img, objs = generate(seed, "val", i, image_size)
        name = f"img{i:03d}.png"
        img.save(root / name)
        out.append((name, caption_of(objs), objs[0].shape))
    return out


def tiny_csv(directory: str | Path, n: int = 12, *, image_size: int = 64, seed: int = 0, missing: int = 0) -> Path:
    """A CSV source (``filepath,title``) of ``n`` shapes images in ``directory``; returns the CSV's path.

    ``missing`` extra rows point at files that do not exist (items the source must skip).
    """
    directory = Path(directory)
    rows = _images(directory / "images", n, image_size, seed)
    lines = ["filepath,title"] + [f"images/{name},{caption}" for name, caption, _ in rows]
    lines += [f"images/missing{i}.png,a missing image" for i in range(missing)]
    path = directory / "captions.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_coco(directory: str | Path, n: int = 12, *, image_size: int = 64, seed: int = 0, uncaptioned: int = 0) -> Path:
    """A COCO captions file (``captions_val2017.json`` + ``val2017/``) of ``n`` images; returns the JSON's path.

    ``uncaptioned`` extra images have no caption (items the source must skip).
    """
    directory = Path(directory)
    rows = _images(directory / "val2017", n, image_size, seed)
    images = [{"id": i, "file_name": name} for i, (name, _, _) in enumerate(rows)]
    images += [{"id": n + i, "file_name": f"img{i:03d}.png"} for i in range(uncaptioned)]
    annotations = [{"image_id": i, "id": i, "caption": caption} for i, (_, caption, _) in enumerate(rows)]
    path = directory / "captions_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}), encoding="utf-8")
    return path


def tiny_folder(directory: str | Path, n: int = 12, *, image_size: int = 64, seed: int = 0, uncaptioned: int = 0) -> Path:
    """A folder source: images in subfolders named by their first shape, ``.txt`` captions; returns the folder.

    ``uncaptioned`` extra images have no ``.txt`` (items the source must skip).
    """
    directory = Path(directory)
    flat = directory / "_flat"
    rows = _images(flat, n + uncaptioned, image_size, seed)
    for i, (name, caption, label) in enumerate(rows):
        target = directory / label
        target.mkdir(parents=True, exist_ok=True)
        (flat / name).replace(target / name)
        if i < n:
            (target / name).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    flat.rmdir()
    return directory


def tiny_batch(bundle: Teacher, dataset: Any = None, n: int = 4) -> Any:
    """A loader :class:`~distillctl.data.loader.Batch` of ``n`` items built with ``bundle``'s transform and
    tokenizer, exactly as the engine builds its batches (default data: :func:`tiny_shapes`)."""
    from distillctl.data.loader import make_batch

    dataset = dataset if dataset is not None else tiny_shapes(max(n, 8))
    return make_batch(dataset, range(min(n, len(dataset))), bundle.transform, bundle.tokenizer)


# =========================================================================== policies
def _rewards(seed: int, n: int, k: int) -> list[float]:
    rng = random.Random(seed)
    means = [rng.uniform(0.0, 0.2) for _ in range(k)]
    return [means[i % k] + rng.gauss(0.0, 0.05) for i in range(n)]


def check_policy(
    factory: Callable[..., Any],
    *,
    arms: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
    episodes: int = 40,
    split_at: int = 17,
    **options: Any,
) -> Any:
    """A policy factory against the :class:`~distillctl.interfaces.Policy` contract; returns the policy.

    ``factory(arms=..., seed=..., **options)``: ``select(e)`` is an index into ``arms``; ``update``
    accepts rewards (positive, negative, zero); ``posterior()`` is one JSON-able dict per arm;
    ``state_dict()`` survives a JSON round trip and a fresh policy loaded from it continues
    bit-exactly (same arms, same posteriors) after ``split_at`` episodes; the same seed gives the same
    choices. Policies are pure Python: none of this needs torch.
    """
    arm_list = [tuple(a) for a in (arms if arms is not None else ARMS)]
    what = _label(factory, "policy")

    def fresh() -> Any:
        return factory(arms=[tuple(a) for a in arm_list], seed=seed, **options)

    policy = fresh()
    what = _label(policy, "policy") if getattr(policy, "name", None) else what
    _check([tuple(a) for a in getattr(policy, "arms", [])] == arm_list, what,
           f"policy.arms must be the arms it was given ({arm_list}), got {getattr(policy, 'arms', None)!r}")
    rewards = _rewards(seed, episodes, len(arm_list))
    rewards[1], rewards[2] = -0.05, 0.0  # negative and zero rewards happen (a probe loss that went up)

    def play(p: Any, start: int, stop: int) -> list[int]:
        picks = []
        for e in range(start, stop):
            arm = p.select(e)
            _check(isinstance(arm, int) and not isinstance(arm, bool) and 0 <= arm < len(arm_list), what,
                   f"select({e}) must return an int index in 0..{len(arm_list) - 1}, got {arm!r}")
            p.update(arm, rewards[e])
            picks.append(arm)
        return picks

    def posterior(p: Any) -> str:
        post = p.posterior()
        _check(isinstance(post, list) and len(post) == len(arm_list) and all(isinstance(d, dict) for d in post), what,
               f"posterior() must be a list of one dict per arm ({len(arm_list)}), got {post!r}")
        for d in post:
            for k, v in d.items():
                _check(isinstance(k, str) and (v is None or isinstance(v, (int, float))), what,
                       f"posterior() entries must map str -> number, got {k!r}: {v!r}")
        try:
            return json.dumps(post, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise _fail(what, f"posterior() is not JSON-serialisable: {exc}") from None

    split_at = max(0, min(split_at, episodes))
    head = play(policy, 0, split_at)
    posterior(policy)
    try:
        state = json.loads(json.dumps(policy.state_dict()))
    except (TypeError, ValueError) as exc:
        raise _fail(what, f"state_dict() must be JSON-serialisable: {exc}") from None
    _check(isinstance(state, dict), what, f"state_dict() must be a dict, got {type(state).__name__}")
    clone = fresh()
    clone.load_state_dict(state)
    _check(posterior(clone) == posterior(policy), what,
           "a fresh policy loaded from state_dict() has a different posterior()")
    tail, tail_clone = play(policy, split_at, episodes), play(clone, split_at, episodes)
    _check(tail == tail_clone, what,
           f"not bit-exact after load_state_dict(): episodes {split_at}..{episodes - 1} picked {tail} "
           f"vs {tail_clone} after the round trip (the RNG state must be part of state_dict())")
    _check(posterior(clone) == posterior(policy), what, "posteriors differ after continuing from state_dict()")
    again = play(fresh(), 0, episodes)
    _check(again == head + tail, what, f"the same seed gave different choices: {head + tail} vs {again}")
    one = factory(arms=[arm_list[0]], seed=seed, **options)
    for e in range(3):
        _check(one.select(e) == 0, what, "with a single arm, select() must return 0")
        one.update(0, 0.1)
    return policy


# =========================================================================== datasets
def check_dataset(
    factory: Callable[..., Any],
    *,
    splits: Iterable[str] = ("train", "val", "test"),
    items: int = 8,
    skipped: Iterable[int] = (),
    **options: Any,
) -> Any:
    """A dataset factory against the :class:`~distillctl.interfaces.Dataset` contract; returns the train split.

    For every split in ``splits``: ``factory(split=..., **options)`` builds; ``name`` is a string;
    ``len()`` is a non-negative int; ``describe()`` is one non-empty line; the first ``items`` items
    are :class:`~distillctl.interfaces.Sample` (RGB-able PIL image, non-empty caption, ``label`` str or
    None, ``captions`` a list of str) or raise :class:`distillctl.data.SkipItem` with a reason; at
    least one is usable; an index past the end raises IndexError; the dataset pickles (DataLoader
    workers). ``skipped`` lists indices of the *train* split that must raise SkipItem. An unknown
    split is a :class:`DistillctlError`, not a crash.
    """
    from PIL import Image

    from distillctl.data import SkipItem
    from distillctl.interfaces import Sample

    what = _label(factory, "dataset")
    must_skip = set(skipped)
    first = None
    for split in splits:
        ds = factory(split=split, **options)
        where = f"{what} (split {split!r})"
        first = first if first is not None else ds
        _check(isinstance(getattr(ds, "name", None), str) and ds.name, where, "must have a non-empty str .name")
        n = len(ds)
        _check(isinstance(n, int) and n >= 0, where, f"len() must be an int >= 0, got {n!r}")
        desc = ds.describe()
        _check(isinstance(desc, str) and desc.strip() and "\n" not in desc, where,
               f"describe() must be one non-empty line, got {desc!r}")
        usable = 0
        for i in range(min(n, items)):
            try:
                sample = ds[i]
            except SkipItem as exc:
                _check(isinstance(exc.reason, str) and exc.reason.strip(), where, f"SkipItem at {i} has no reason")
                continue
            _check(not (split == "train" and i in must_skip), where, f"item {i} must raise SkipItem, got {sample!r}")
            _check(isinstance(sample, Sample), where, f"item {i} must be a Sample, got {type(sample).__name__}")
            _check(isinstance(sample.image, Image.Image), where, f"item {i}: image must be a PIL image")
            sample.image.convert("RGB")
            _check(isinstance(sample.caption, str) and sample.caption.strip(), where,
                   f"item {i}: caption must be a non-empty str, got {sample.caption!r}")
            _check(sample.label is None or isinstance(sample.label, str), where, f"item {i}: label must be str or None")
            _check(isinstance(sample.captions, list) and all(isinstance(c, str) for c in sample.captions), where,
                   f"item {i}: captions must be a list of str")
            usable += 1
        if split == "train":
            for i in must_skip:
                try:
                    ds[i]
                except SkipItem:
                    continue
                raise _fail(where, f"item {i} must raise SkipItem")
        _check(n == 0 or usable > 0, where, f"none of the first {min(n, items)} items is usable")
        if n < 10**7:  # streams answer any index; sized sources end
            try:
                ds[n]
            except IndexError:
                pass
            except SkipItem:
                raise _fail(where, f"ds[len(ds)] = ds[{n}] must raise IndexError, not SkipItem") from None
            else:
                raise _fail(where, f"ds[len(ds)] = ds[{n}] must raise IndexError")
        try:
            pickle.loads(pickle.dumps(ds))
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            raise _fail(where, f"must pickle (DataLoader workers): {type(exc).__name__}: {exc}") from None
    try:
        factory(split="no-such-split", **options)
    except DistillctlError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise _fail(what, f"an unknown split must raise DistillctlError, got {type(exc).__name__}: {exc}") from None
    return first


# =========================================================================== families
def _tensor_dict(what: str, method: str, terms: Any, *, allow_empty: bool = True, grad: bool = True) -> None:
    import torch

    _check(isinstance(terms, dict), what, f"{method} must return a dict of scalars, got {type(terms).__name__}")
    _check(allow_empty or terms, what, f"{method} returned no terms")
    for k, v in terms.items():
        _check(isinstance(k, str), what, f"{method}: keys must be str, got {k!r}")
        _check(isinstance(v, torch.Tensor) and v.ndim == 0, what, f"{method}[{k!r}] must be a 0-dim tensor, got {v!r}")
        _check(bool(torch.isfinite(v)), what, f"{method}[{k!r}] is not finite: {float(v.detach())}")
        _check(not grad or v.requires_grad, what, f"{method}[{k!r}] carries no gradient to the student")


def _outputs_equal(a: Any, b: Any) -> str | None:
    """None when two forward outputs are identical, else which key differs."""
    import torch

    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return "shape"
        return None if torch.equal(a, b) else f"max |diff| {float((a.float() - b.float()).abs().max()):.3g}"
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return f"keys {sorted(a)} vs {sorted(b) if isinstance(b, dict) else b!r}"
        for k in a:
            diff = _outputs_equal(a[k], b[k])
            if diff:
                return f"{k}: {diff}"
        return None
    if isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            diff = _outputs_equal(x, y)
            if diff:
                return f"[{i}]: {diff}"
        return None
    return None if a == b else "value"


def _tokens(h: torch.Tensor) -> torch.Tensor:
    return h.flatten(2).transpose(1, 2) if h.ndim == 4 else h


def _check_step_plans(family: Any, what: str, model: Any, inputs: Any, modules: list[Any], full_hidden: dict[str, Any],
                      temperature: float, teacher_out: Any) -> dict[str, Any]:
    """``step_plan`` (optional): each arm's plan reproduces the full forward's hidden states on its layers."""
    import torch

    from distillctl.interfaces import StepPlan
    from distillctl.layerwise import HiddenStateTap

    plan_of = getattr(family, "step_plan", None)
    if plan_of is None or not modules:
        return {}
    names = [m.name for m in modules]
    arms = [(n,) for n in names] + ([tuple(names)] if len(names) > 1 else [])
    out: dict[str, Any] = {}
    for arm in arms:
        plan = plan_of(arm)
        label = "+".join(arm)
        if plan is None:
            out[label] = None
            continue
        _check(isinstance(plan, StepPlan), what, f"step_plan({arm!r}) must return a StepPlan or None, got {type(plan).__name__}")
        _check(callable(plan.forward) and isinstance(plan.parts, tuple), what,
               f"step_plan({arm!r}): a StepPlan needs a callable forward and a tuple of parts")
        paths = [s.layer(i) for m in modules if m.name in arm for s in m.stacks for i in range(s.depth)]
        with HiddenStateTap(model, paths, stop=not plan.terms) as tap:  # with gradients: the terms must carry them
            outputs = tap.run(plan.forward, model, inputs)
        missing = [p for p in paths if p not in tap.outputs]
        _check(not missing, what, f"step_plan({arm!r}).forward did not run layers {missing[:3]} of its arm")
        for p in paths:
            a, b = _tokens(tap.outputs[p].detach()), _tokens(full_hidden[p].detach())
            _check(a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5), what,
                   f"step_plan({arm!r}).forward gives other hidden states at {p} than the full forward")
        if plan.terms:
            _tensor_dict(what, f"task_loss() of step_plan({arm!r}) outputs", family.task_loss(outputs, inputs))
            _tensor_dict(what, f"kd_terms() of step_plan({arm!r}) outputs",
                         family.kd_terms(outputs, teacher_out, inputs, temperature=temperature))
        out[label] = list(plan.parts)
    return out


def check_family(
    family: Any,
    bundle: Teacher,
    *,
    dataset: Any = None,
    batch_size: int = 4,
    splitter: Any = None,
    tmp_dir: str | Path | None = None,
    temperature: float = 2.0,
    registered_evaluators: bool = True,
) -> dict[str, Any]:
    """A family against the :class:`~distillctl.interfaces.Family` contract, on ``bundle`` (a teacher).

    Checks: ``inputs`` of a tiny loader batch; ``forward`` (teacher under no_grad); ``task_loss`` and
    ``kd_terms`` (of a trainable copy against the teacher) are dicts of finite 0-dim tensors that carry
    gradients, and backward reaches the copy's parameters; with ``splitter``, ``position_mask`` of
    every module is None or bool ``[B, L]`` matching that module's layer outputs; ``export`` writes
    ``student.safetensors`` whose metadata names the family, and ``load`` rebuilds a bundle (naming the
    family, and the teacher's splitter) whose forward is identical; ``build(model_config)`` makes a model with the same state-dict keys and shapes;
    the optional methods (``with_depths``, ``encode_image`` / ``encode_text``, ``dummy_inputs``) behave when
    present; ``evaluators`` are registered evaluator names (``registered_evaluators=False`` skips that, for a
    family tested without the plugin that brings its evaluators). With ``splitter`` and a ``step_plan``
    method (module-local steps), every single-module arm's and the all-modules arm's plan is None or a
    :class:`~distillctl.interfaces.StepPlan` whose forward gives exactly the full forward's hidden states on
    that arm's layers (stopped early after the last of them when ``terms`` is False) and, when ``terms`` is
    True, task and KD terms from its outputs. Returns ``{"inputs", "outputs", "loaded", "masks", "plans"}``
    (``masks``: module -> the layer paths its position mask was checked against; ``plans``: arm -> the parts
    its plan runs, None for a full step).
    """
    import torch

    from distillctl.export import export_family
    from distillctl.interfaces import Teacher
    from distillctl.layerwise import HiddenStateTap

    what = _label(family, "family")
    _check(isinstance(getattr(family, "name", None), str) and family.name, what, "must have a non-empty str .name")
    evaluators = getattr(family, "evaluators", ())
    _check(isinstance(evaluators, (tuple, list)) and all(isinstance(e, str) for e in evaluators), what,
           f".evaluators must be a tuple of evaluator names, got {evaluators!r}")
    if registered_evaluators:
        _check_registered("evaluator", evaluators, what)
    model = bundle.model
    batch = tiny_batch(bundle, dataset, batch_size)
    inputs = family.inputs(batch, "cpu")
    _check(isinstance(inputs, dict), what, f"inputs() must return a dict, got {type(inputs).__name__}")
    with torch.no_grad():
        teacher_out = family.forward(model, inputs)
    _check(isinstance(teacher_out, dict), what, f"forward() must return a dict, got {type(teacher_out).__name__}")

    # a trainable copy stands in for the student: task and KD terms must reach its parameters
    student = copy.deepcopy(model).train().requires_grad_(True)
    mask_checks: dict[str, list[str]] = {}
    modules = splitter.modules(student) if splitter is not None else []
    paths = [s.layer(i) for m in modules for s in m.stacks for i in range(s.depth)]
    with HiddenStateTap(student, paths) as tap:
        student_out = family.forward(student, inputs)
    task = family.task_loss(student_out, inputs)
    _tensor_dict(what, "task_loss()", task, allow_empty=False)
    kd = family.kd_terms(student_out, teacher_out, inputs, temperature=temperature)
    _tensor_dict(what, "kd_terms()", kd)
    total = sum(task.values()) + (sum(kd.values()) if kd else 0)
    total.backward()
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    _check(any(g is not None and bool(g.abs().sum() > 0) for g in grads), what,
           "task_loss() + kd_terms() backward left every student parameter without gradient")

    for m in modules:
        mask = family.position_mask(m.name, inputs)
        layer_lengths = {p: _tokens(tap.outputs[p]).shape[:2] for s in m.stacks for p in (s.layer(i) for i in range(s.depth))}
        if mask is None:
            continue
        _check(isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.ndim == 2, what,
               f"position_mask({m.name!r}) must be None or a bool [B, L] tensor, got {getattr(mask, 'dtype', mask)!r}")
        for p, shape in layer_lengths.items():
            _check(tuple(mask.shape) == tuple(shape), what,
                   f"position_mask({m.name!r}) is {list(mask.shape)} but layer {p} outputs [B, L] = {list(shape)}")
        mask_checks[m.name] = list(layer_lengths)
    plans = _check_step_plans(family, what, student, inputs, modules, tap.outputs, temperature, teacher_out)

    # export -> load: the reloaded bundle computes exactly what the exported model computes
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = Path(tmp_dir) if tmp_dir is not None else Path(scratch)
        out_dir.mkdir(parents=True, exist_ok=True)
        sizes = family.export(model, out_dir, model_config=bundle.model_config, source=bundle,
                              metadata={"teacher": bundle.name, "steps": "0"}, dtype="fp32")
        _check(isinstance(sizes, dict), what, f"export() must return a dict of sizes, got {type(sizes).__name__}")
        path = out_dir / "student.safetensors"
        _check(path.is_file(), what, f"export() must write {path.name} (distillctl.export.save_weights)")
        _check(export_family(path) == family.name, what,
               f"export metadata must record family={family.name!r} (distillctl eval finds the family by it), "
               f"got {export_family(path)!r}")
        loaded = family.load(path, "cpu")
    _check(isinstance(loaded, Teacher), what, f"load() must return a Teacher bundle, got {type(loaded).__name__}")
    _check(loaded.family == family.name, what, f"load(): bundle.family must be {family.name!r}, got {loaded.family!r}")
    _check(loaded.splitter == bundle.splitter, what,
           f"load(): bundle.splitter must be the teacher's {bundle.splitter!r} (evaluators split the loaded student "
           f"with it), got {loaded.splitter!r}")
    _check(not loaded.model.training, what, "load(): the model must be in eval mode")
    reinputs = family.inputs(tiny_batch(loaded, dataset, batch_size), "cpu")
    _check(_outputs_equal(inputs, reinputs) is None, what,
           "the loaded bundle's transform/tokenizer make different inputs from the exported one's: "
           f"{_outputs_equal(inputs, reinputs)}")
    with torch.no_grad():
        again = family.forward(loaded.model, inputs)
    diff = _outputs_equal(teacher_out, again)
    _check(diff is None, what, f"export -> load changed the forward outputs ({diff})")

    fresh = family.build(bundle.model_config, "cpu")
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    _check(want == got, what, f"build(model_config) differs from the bundle's model: "
           f"{sorted(set(want) ^ set(got))[:5] or [k for k in want if want[k] != got[k]][:5]}")

    if hasattr(family, "with_depths") and modules:
        smaller = family.with_depths(bundle.model_config, {m.name: 1 for m in modules})
        _check(isinstance(smaller, dict), what, "with_depths() must return a model config dict")
        shallow = family.build(smaller, "cpu")
        depths = {s.name: s.depth for m in splitter.modules(shallow) for s in m.stacks}
        _check(all(d == 1 for d in depths.values()), what,
               f"build(with_depths(config, {{module: 1 for every module}})) has stack depths {depths}")
    if hasattr(family, "encode_image") and hasattr(family, "encode_text"):
        with torch.no_grad():
            img = family.encode_image(model, batch.images)
            txt = family.encode_text(model, batch.text)
        for name, emb in (("encode_image", img), ("encode_text", txt)):
            _check(isinstance(emb, torch.Tensor) and emb.ndim == 2 and emb.shape[0] == len(batch), what,
                   f"{name}() must return [N, E], got {getattr(emb, 'shape', emb)!r}")
            _check(torch.allclose(emb.float().norm(dim=-1), torch.ones(len(batch)), atol=1e-3), what,
                   f"{name}() must return L2-normalised embeddings")
    if hasattr(family, "dummy_inputs"):
        dummy = family.dummy_inputs(bundle, 2, "cpu")
        with torch.no_grad():
            out = family.forward(model, dummy)
        _check(isinstance(out, dict), what, "forward(dummy_inputs(...)) must return a dict")
    return {"inputs": inputs, "outputs": teacher_out, "loaded": loaded, "masks": mask_checks, "plans": plans}


def _check_registered(kind: str, names: Iterable[str], what: str) -> None:
    from distillctl.plugins import registry

    reg = registry(kind)
    missing = [n for n in names if n not in reg]
    _check(not missing, what, f"names {kind}s nobody registered: {', '.join(missing)} (valid: {reg.listing()})")


def _make(factory: Callable[..., Any] | str, kind: str, **kwargs: Any) -> Any:
    if isinstance(factory, str):
        from distillctl.plugins import registry

        return registry(kind).create(factory, **kwargs)
    return factory(**kwargs)


def check_triple(
    teacher_factory: Callable[..., Any] | str,
    student_factory: Callable[..., Any] | str,
    splitter_factory: Callable[..., Any] | str,
    family: Any = None,
    *,
    teacher_options: dict[str, Any] | None = None,
    student_options: dict[str, Any] | None = None,
    splitter_options: dict[str, Any] | None = None,
    dataset: Any = None,
    batch_size: int = 2,
) -> dict[str, Any]:
    """A teacher / student / splitter triple against the layer contract; returns the built parts.

    Factories are callables or registered names. Checks: the teacher is a bundle in eval mode with no
    trainable parameter, naming a registered family and splitter (the ones the factory declares as
    ``factory.family`` / ``factory.splitter``, if it does); the student is a
    :class:`~distillctl.interfaces.Student` with fewer parameters; ``check_compatible`` passes; both
    models split into the same module names; every layer path exists; hooked outputs are ``[B, L, D]``
    or ``[B, D, H, W]``; paired layers (``layer_map``) have the same ``L``; masks (if the family gives
    them) match. ``family`` defaults to the registered family the teacher names. Returns
    ``{"teacher", "student", "splitter", "family", "pairs"}``.
    """
    import torch

    from distillctl.interfaces import Student, Teacher
    from distillctl.layerwise import HiddenStateTap, layer_pairs
    from distillctl.plugins import registry

    teacher = _make(teacher_factory, "teacher", device="cpu", **(teacher_options or {}))
    what = _label(teacher_factory if not isinstance(teacher_factory, str) else teacher, "teacher")
    _check(isinstance(teacher, Teacher), what, f"the factory must return a Teacher bundle, got {type(teacher).__name__}")
    what = f"teacher {teacher.name!r}"
    _check(not teacher.model.training, what, "the teacher model must be in eval mode")
    _check(not any(p.requires_grad for p in teacher.model.parameters()), what, "the teacher must be frozen (requires_grad_(False))")
    _check(teacher.family in registry("family"), what, f"names family {teacher.family!r}, which nobody registered")
    _check(teacher.splitter in registry("splitter"), what, f"names splitter {teacher.splitter!r}, which nobody registered")
    declaring = teacher_factory if not isinstance(teacher_factory, str) else registry("teacher").get(teacher_factory).factory
    for attr in ("family", "splitter"):  # optional declarations (factory.family = "..."): `presets validate` trusts them
        declared = getattr(declaring, attr, None)
        if isinstance(declared, str):
            _check(declared == getattr(teacher, attr), what,
                   f"the factory declares {attr} = {declared!r} but its bundle names {getattr(teacher, attr)!r}")
    family = family if family is not None else registry("family").create(teacher.family)
    splitter = _make(splitter_factory, "splitter", **(splitter_options or {}))
    s_what = _label(splitter_factory if not isinstance(splitter_factory, str) else splitter, "splitter")
    student = _make(student_factory, "student", teacher=teacher, splitter=splitter, **(student_options or {}))
    st_what = _label(student_factory, "student") if not isinstance(student_factory, str) else f"student {student_factory!r}"
    _check(isinstance(student, Student), st_what, f"the factory must return a Student, got {type(student).__name__}")
    _check(isinstance(student.model, torch.nn.Module), st_what, "Student.model must be a torch.nn.Module")
    _check(isinstance(student.model_config, dict), st_what, "Student.model_config must be a dict (what export writes)")
    n_t = sum(p.numel() for p in teacher.model.parameters())
    n_s = sum(p.numel() for p in student.model.parameters())
    _check(n_s < n_t, st_what, f"the student ({n_s:,} params) must be smaller than the teacher ({n_t:,})")
    _check(any(p.requires_grad for p in student.model.parameters()), st_what, "the student has no trainable parameter")
    splitter.check_compatible(teacher.model, student.model)

    t_modules, s_modules = splitter.modules(teacher.model), splitter.modules(student.model)
    _check(t_modules and [m.name for m in t_modules] == [m.name for m in s_modules], s_what,
           f"teacher modules {[m.name for m in t_modules]} and student modules {[m.name for m in s_modules]} must match")
    for label, model, modules in (("teacher", teacher.model, t_modules), ("student", student.model, s_modules)):
        names = dict(model.named_modules())
        for m in modules:
            _check(m.depth > 0, s_what, f"{label} module {m.name!r} has no layers")
            for s in m.stacks:
                for i in range(s.depth):
                    _check(s.layer(i) in names, s_what, f"{label} layer {s.layer(i)!r} (module {m.name!r}) is not a submodule")
    try:
        pairs = layer_pairs(t_modules, s_modules, student.layer_map)
    except DistillctlError as exc:
        raise _fail(st_what, f"its layer_map does not fit the splitter's modules: {exc}") from None

    inputs = family.inputs(tiny_batch(teacher, dataset, batch_size), "cpu")
    s_paths = [s for m in s_modules for s, _ in pairs[m.name]]
    t_paths = [t for m in s_modules for _, t in pairs[m.name]]
    student.model.eval()
    with torch.no_grad(), HiddenStateTap(teacher.model, t_paths) as t_tap, HiddenStateTap(student.model, s_paths) as s_tap:
        family.forward(teacher.model, inputs)
        family.forward(student.model, inputs)
    student.model.train()
    for label, tap in (("teacher", t_tap), ("student", s_tap)):
        for path in tap.paths:
            h = tap.outputs.get(path)
            _check(h is not None, s_what, f"{label} layer {path!r} did not run in forward()")
            _check(isinstance(h, torch.Tensor) and h.ndim in (3, 4), s_what,
                   f"{label} layer {path!r} must output [B, L, D] or [B, D, H, W] (or a tuple starting with it), "
                   f"got {getattr(h, 'shape', type(h).__name__)}")
    for m in s_modules:
        mask = family.position_mask(m.name, inputs)
        for s_path, t_path in pairs[m.name]:
            hs, ht = _tokens(s_tap.outputs[s_path]), _tokens(t_tap.outputs[t_path])
            _check(hs.shape[:2] == ht.shape[:2], s_what,
                   f"paired layers {s_path} (student {list(hs.shape)}) and {t_path} (teacher {list(ht.shape)}) "
                   "must have the same [B, L]")
            _check(mask is None or tuple(mask.shape) == tuple(hs.shape[:2]), _label(family, "family"),
                   f"position_mask({m.name!r}) is {list(mask.shape) if mask is not None else None} "
                   f"but layer {s_path} outputs [B, L] = {list(hs.shape[:2])}")
    return {"teacher": teacher, "student": student, "splitter": splitter, "family": family, "pairs": pairs}


# =========================================================================== evaluators
def check_evaluator(
    factory: Callable[..., Any] | str,
    family: Any,
    bundle: Teacher,
    dataset: Any = None,
    *,
    teacher: Teacher | None = None,
    samples: int = 8,
    **options: Any,
) -> dict[str, float]:
    """An evaluator against the :class:`~distillctl.interfaces.Evaluator` contract; returns its metrics.

    ``factory(**options)`` builds it; ``name`` is a string; ``evaluate`` can be called as
    ``evaluate(bundle, ctx)`` (not 0.1's signature); ``applies_to(family)`` (if defined) is a
    bool and True here; ``evaluate(bundle, ctx)`` returns a flat ``{str: finite number}``, non-empty unless
    the evaluator scores pairs only, and leaves the model's train/eval mode as it was; with ``teacher``,
    ``evaluate_pair`` (if defined) returns such a dict too.
    """
    from distillctl.interfaces import EvalContext

    evaluator = _make(factory, "evaluator", **options)
    what = _label(evaluator, "evaluator")
    _check(isinstance(getattr(evaluator, "name", None), str) and evaluator.name, what, "must have a non-empty str .name")
    _check(callable(getattr(evaluator, "evaluate", None)), what, "must have an evaluate(bundle, ctx) method")
    sig = inspect.signature(evaluator.evaluate)
    try:  # what distillctl checks before it runs an evaluator (0.1's evaluate(model, tokenizer, ...) is refused)
        sig.bind(object(), object())
    except TypeError:
        raise _fail(what, f"evaluate{sig} cannot be called as evaluate(bundle, ctx) (the plugin API since 0.2.0)") from None
    if hasattr(evaluator, "applies_to"):
        applies = evaluator.applies_to(family)
        _check(isinstance(applies, bool), what, f"applies_to() must return a bool, got {applies!r}")
        _check(applies, what, f"applies_to({family.name!r}) is False")
    ctx = EvalContext(family=family, dataset=dataset if dataset is not None else tiny_shapes(max(samples, 8), split="test"),
                      device="cpu", samples=samples, teacher=teacher)
    was = bundle.model.training
    metrics = evaluator.evaluate(bundle, ctx)
    _check(bundle.model.training == was, what, "evaluate() changed the model's train/eval mode")

    def numbers(method: str, out: Any) -> None:
        _check(isinstance(out, dict), what, f"{method} must return a dict, got {out!r}")
        for k, v in out.items():
            _check(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                   what, f"{method}: {k!r} must map to a finite number, got {v!r}")

    numbers("evaluate()", metrics)
    pairwise = hasattr(evaluator, "evaluate_pair")
    _check(metrics or pairwise, what, "evaluate() returned no metric (only a pair evaluator may, through evaluate_pair)")
    if teacher is not None and pairwise:
        pair = evaluator.evaluate_pair(bundle, teacher, ctx)
        numbers("evaluate_pair()", pair)
        _check(metrics or pair, what, "evaluate() and evaluate_pair() returned no metric")
        metrics = {**metrics, **pair}
    return dict(metrics)


# =========================================================================== trackers
def check_tracker(factory: Callable[..., Any] | str, out_dir: str | Path, **options: Any) -> list[str]:
    """A tracker against the contract of ``register_trackers``; returns the files it wrote under ``out_dir``.

    ``factory(**options)`` writes nothing (it runs at start-up, before the run's folder is set up); ``name`` is
    a non-empty str; ``start(out_dir=, run_name=, config=)`` takes a whole run config; ``log_metrics`` takes
    per-step values, then per-episode values at the same step, then the evaluation; the optional
    ``log_text``, ``log_summary``, ``log_artifact`` (a small HTML file) and ``local_dirs`` work; ``finish(failed=False)``
    closes the run. Run it with the tracker's offline settings (e.g. ``WANDB_MODE=offline``).
    """
    from distillctl.config import default_config, merge

    out = Path(out_dir)
    tracker = _make(factory, "tracker", **options)
    what = _label(tracker, "tracker")
    _check(isinstance(getattr(tracker, "name", None), str) and tracker.name, what, "must have a non-empty str .name")
    _check(not out.exists() or not any(out.rglob("*")), what, "the factory wrote files: write nothing before start()")
    for method in ("start", "log_metrics", "finish"):
        _check(callable(getattr(tracker, method, None)), what, f"has no {method}() method")
    out.mkdir(parents=True, exist_ok=True)
    config = merge(default_config(), {"teacher": {"name": "quickstart"}, "train": {"report_to": [tracker.name]}})
    tracker.start(out_dir=out, run_name=out.name, config=config)
    for step in (1, 2):
        tracker.log_metrics({"train/total": 3.0 - step, "train/lw.vision": 0.5 / step, "train/lr": 1e-3 * step}, step)
    tracker.log_metrics({"episode/reward": 0.1, "episode/arm_index": 0.0, "episode/arm/vision": 1.0,
                         "posterior/vision/mean": 0.1}, 2)
    if hasattr(tracker, "log_text"):
        tracker.log_text("episode/arm_name", "episode 1: vision", 2)
    final = {"eval/student/i2t_r1": 0.5, "eval/student/text_retrieval_recall@1": 0.5, "sizes/compression": 2.0}
    tracker.log_metrics(final, 2)
    if hasattr(tracker, "log_summary"):
        tracker.log_summary(final)
    if hasattr(tracker, "log_artifact"):
        page = out / "report.html"
        page.write_text("<!doctype html><title>report</title>", encoding="utf-8")
        tracker.log_artifact(page)
    if hasattr(tracker, "local_dirs"):
        dirs = tracker.local_dirs()
        _check(isinstance(dirs, list) and all(isinstance(d, Path) for d in dirs), what, "local_dirs() must return a list of Paths")
    tracker.finish(failed=False)
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "report.html")


# =========================================================================== the real engine
TINY_DISTILL_OVERRIDES: dict[str, dict[str, Any]] = {
    "train": {"episodes": 2, "episode_steps": 2, "batch_size": 8, "probe_batches": 1, "device": "cpu", "warmup_steps": 1,
              "threads": 1},  # tiny models: one thread is fastest, and many test processes share the cores
    "data": {"workers": 0},
    "eval": {"samples": 16},
}


def check_plugin(*plugin_objects: Any) -> Any:
    """Your plugin module(s) load next to the built-ins as users will see them: not broken (an import or
    hook that raises, a ``DISTILLCTL_PLUGIN_API`` this distillctl refuses), no name clashing with another
    registration, no name shadowed by a built-in (its component would only answer to ``PLUGIN/NAME``).
    Returns the loaded ``Plugins``."""
    from distillctl import plugins

    loaded = plugins.load_plugins(include_entry_points=False, extra=plugin_objects)
    problems = [b.line() for b in loaded.broken] + [c.line() for c in loaded.clashes()]
    problems += [sh.line() for sh in loaded.shadowed()]
    if problems:
        raise AssertionError("; ".join(problems))
    return loaded


def run_tiny_distill(
    out: str | Path,
    *,
    teacher: str = "quickstart",
    student: str = "layer-subset",
    data: str = "shapes",
    policy: str = "optima",
    config: dict[str, dict[str, Any]] | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the real engine (2 episodes of 2 steps, batch 8, CPU) into ``out``; returns ``report.json``'s dict.

    Components are registered names: install your package (its entry point registers them), or run this
    inside ``with testing.registered(your_plugin_module):``; ``config`` is merged over the tiny defaults
    (``{"student": {"ratio": 0.5}}``) and ``overrides`` are ``--set`` strings (``"eval.samples=8"``).
    Checks that the run wrote ``student.safetensors``, ``report.json`` and ``run.toml``, that the report
    holds one record per episode with a finite probe loss, that the teacher stayed frozen and in eval
    mode, and that its weights are bit-identical to a freshly created teacher's (the teacher factory
    must be deterministic: bundled weights, a file, or a seeded random init).
    """
    import torch

    from distillctl.config import apply_overrides, component_options, default_config, merge, validate
    from distillctl.engine import Run
    from distillctl.plugins import registry

    cfg = merge(default_config(), copy.deepcopy(TINY_DISTILL_OVERRIDES))
    cfg = merge(cfg, {"teacher": {"name": teacher}, "student": {"name": student}, "data": {"name": data},
                      "policy": {"name": policy}})
    cfg = merge(cfg, copy.deepcopy(config or {}))
    cfg = validate(apply_overrides(cfg, list(overrides)))
    out = Path(out)
    run = Run(cfg, out)
    report = run.execute()
    what = f"distill {teacher} -> {student}"
    for name in ("student.safetensors", "report.json", "run.toml"):
        _check((out / name).is_file(), what, f"the run did not write {name}")
    episodes = report.get("episodes", [])
    _check(len(episodes) == cfg["train"]["episodes"], what,
           f"report.json holds {len(episodes)} episodes, expected {cfg['train']['episodes']}")
    _check(all(math.isfinite(e["probe_loss"]) for e in episodes), what, "a probe loss is not finite")
    t_model = run.ctx.teacher_model
    _check(not t_model.training and not any(p.requires_grad for p in t_model.parameters()), what,
           "the teacher left the run unfrozen or in train mode")
    again = registry("teacher").create(teacher, weights=cfg["teacher"].get("weights"), device="cpu",
                                       **component_options(cfg["teacher"], "teacher"))
    before = again.model.state_dict()
    changed = [k for k, v in t_model.state_dict().items() if k not in before or not torch.equal(v.cpu(), before[k])]
    _check(not changed, what, f"the teacher's weights changed during the run: {changed[:3]}")
    return report
