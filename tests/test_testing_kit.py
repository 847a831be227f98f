"""Every built-in component passes the conformance kit (:mod:`distillctl.testing`), and the kit fails
components that break a contract, with a message naming what broke.

Families are parametrised over the registered built-in families, so a new built-in family is covered
(and must add a tiny bundle to ``TINY_BUNDLES``) without touching the tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distillctl import plugins, testing

BUILTINS = plugins.load_plugins(include_entry_points=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny models on shared CPUs: one torch thread is ~100x faster than two fighting other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _names(kind: str) -> list[str]:
    return BUILTINS.registry(kind).names()


def _factory(kind: str, name: str) -> Callable[..., Any]:
    return BUILTINS.registry(kind).get(name).factory


# ----------------------------------------------------------------------------- policies
@pytest.mark.parametrize("name", _names("policy"))
def test_every_builtin_policy_passes(name: str) -> None:
    testing.check_policy(_factory("policy", name))
    testing.check_policy(_factory("policy", name), arms=[("a",), ("b",)], seed=7, episodes=12, split_at=5)


def test_check_policy_catches_a_policy_that_forgets_its_rng() -> None:
    from distillctl.policies import UniformPolicy

    class Forgetful(UniformPolicy):
        def state_dict(self) -> dict[str, Any]:
            state = super().state_dict()
            state.pop("rng", None)
            return state

        def load_state_dict(self, state: dict[str, Any]) -> None:
            pass

    with pytest.raises(AssertionError, match="bit-exact|different posterior"):
        testing.check_policy(Forgetful)


def test_check_policy_catches_a_bad_index() -> None:
    from distillctl.policies import UniformPolicy

    class OffByOne(UniformPolicy):
        def select(self, episode: int) -> int:
            return len(self.arms)

    with pytest.raises(AssertionError, match=r"select\(0\) must return an int index"):
        testing.check_policy(OffByOne)


# ----------------------------------------------------------------------------- datasets
def test_shapes_passes() -> None:
    testing.check_dataset(_factory("dataset", "shapes"), splits=("train", "val", "test", "hard"), length=20)


def test_csv_passes_and_skips_missing_images(tmp_path: Path) -> None:
    path = testing.tiny_csv(tmp_path, n=20, missing=1)
    # the missing row is the last: it lands in the test split
    testing.check_dataset(_factory("dataset", "csv"), path=str(path), items=30, test_fraction=0.1, val_fraction=0.1)
    ds = _factory("dataset", "csv")(split="test", path=str(path), test_fraction=0.1, val_fraction=0.1)
    from distillctl.data import SkipItem

    with pytest.raises(SkipItem, match="missing"):
        ds[len(ds) - 1]


def test_coco_passes(tmp_path: Path) -> None:
    path = testing.tiny_coco(tmp_path, n=20)
    testing.check_dataset(_factory("dataset", "coco"), path=str(path))


def test_folder_passes_and_skips_uncaptioned(tmp_path: Path) -> None:
    root = testing.tiny_folder(tmp_path, n=20, uncaptioned=2)
    ds = testing.check_dataset(_factory("dataset", "folder"), path=str(root), val_fraction=0.0, test_fraction=0.0, items=30)
    assert ds.describe().startswith("folder")


class _BadSplits:
    """A dataset whose unknown split is a KeyError (a crash), not a DistillctlError."""

    name = "bad"

    def __init__(self, split: str = "train") -> None:
        self.items = {"train": 2, "val": 1, "test": 1}[split]

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        from distillctl.interfaces import Sample

        if i >= self.items:
            raise IndexError(i)
        return Sample(Image.new("RGB", (8, 8)), "a caption")

    def describe(self) -> str:
        return "bad"


def test_check_dataset_catches_a_crash_on_a_bad_split() -> None:
    with pytest.raises(AssertionError, match="unknown split must raise DistillctlError"):
        testing.check_dataset(_BadSplits)


# ----------------------------------------------------------------------------- families
def _quickstart() -> Any:
    from distillctl.quickstart import load_quickstart_teacher

    return load_quickstart_teacher()


def _clip_tiny() -> Any:
    from distillctl.clip.models import load_tiny_teacher

    return load_tiny_teacher()


# family name -> (tiny teacher bundle, student name + options, splitter name)
TINY_BUNDLES: dict[str, tuple[Callable[[], Any], str, dict[str, Any], str]] = {
    "coca": (_quickstart, "layer-subset", {"ratio": 0.5}, "coca"),
    "clip": (_clip_tiny, "layer-subset", {"ratio": 0.5}, "clip"),
}


@pytest.fixture(scope="module")
def bundles() -> dict[str, Any]:
    return {}


def _bundle(bundles: dict[str, Any], family: str) -> Any:
    if family not in TINY_BUNDLES:
        pytest.fail(f"built-in family {family!r} has no tiny bundle in tests/test_testing_kit.py TINY_BUNDLES: add one "
                    "(a tiny teacher, a student and a splitter) so that it runs through distillctl.testing")
    if family not in bundles:
        bundles[family] = TINY_BUNDLES[family][0]()
    return bundles[family]


@pytest.mark.parametrize("family_name", _names("family"))
def test_every_builtin_family_passes(family_name: str, bundles: dict[str, Any], tmp_path: Path) -> None:
    from distillctl.plugins import registry

    bundle = _bundle(bundles, family_name)
    _, student, options, splitter = TINY_BUNDLES[family_name]
    family = registry("family").create(family_name)
    result = testing.check_family(family, bundle, splitter=registry("splitter").create(splitter), tmp_dir=tmp_path)
    assert result["masks"], "the family's position masks were not checked against any module"
    if family_name in ("coca", "clip"):  # module-local steps: the towers alone for single-tower arms
        assert result["plans"]["vision"] == ["visual"] and result["plans"]["text"] == ["text"]
        assert [v for k, v in result["plans"].items() if "+" in k] == [None]  # every module: the full step
    triple = testing.check_triple(lambda **kw: bundle, student, splitter, family, student_options=options)
    assert set(triple["pairs"]) == {m.name for m in triple["splitter"].modules(bundle.model)}


@pytest.mark.parametrize("family_name", _names("family"))
def test_every_evaluator_of_every_builtin_family_passes(family_name: str, bundles: dict[str, Any]) -> None:
    from distillctl.plugins import registry

    bundle = _bundle(bundles, family_name)
    family = registry("family").create(family_name)
    assert family.evaluators, f"family {family_name!r} names no evaluator"
    for evaluator in family.evaluators:  # every name registered, each one runs on the family's tiny bundle
        assert testing.check_evaluator(evaluator, family, bundle, testing.tiny_shapes(8, split="test"), teacher=bundle)


def test_check_family_catches_an_export_that_forgets_the_family(bundles: dict[str, Any], tmp_path: Path) -> None:
    from distillctl.coca.family import CocaFamily

    class Forgetful(CocaFamily):
        name = "coca-fork"  # a family of its own whose export forgets to say so (eval would rebuild a coca)

        def export(self, model: Any, out_dir: Any, **kw: Any) -> dict[str, Any]:
            from distillctl.export import save_weights

            return save_weights(model, Path(out_dir) / "student.safetensors",
                                metadata={"model_config": json.dumps(kw["model_config"])})

    with pytest.raises(AssertionError, match="must record family='coca-fork'"):
        testing.check_family(Forgetful(), _bundle(bundles, "coca"), tmp_dir=tmp_path, registered_evaluators=False)


def test_check_family_catches_a_load_that_names_another_splitter(bundles: dict[str, Any], tmp_path: Path) -> None:
    import dataclasses

    from distillctl.coca.family import CocaFamily

    class WrongSplitter(CocaFamily):
        def load(self, path: Any, device: str = "cpu") -> Any:  # e.g. a bundle built by hand, splitter copy-pasted
            return dataclasses.replace(super().load(path, device), splitter="clip")

    with pytest.raises(AssertionError, match="bundle.splitter must be the teacher's 'coca'.*got 'clip'"):
        testing.check_family(WrongSplitter(), _bundle(bundles, "coca"), tmp_dir=tmp_path, registered_evaluators=False)


def test_check_family_catches_a_step_plan_that_runs_the_wrong_tower(bundles: dict[str, Any], tmp_path: Path) -> None:
    from distillctl.coca.family import CocaFamily
    from distillctl.interfaces import StepPlan
    from distillctl.plugins import registry

    class Crossed(CocaFamily):
        def step_plan(self, modules: tuple[str, ...]) -> StepPlan | None:
            if modules == ("vision",):  # runs the text tower for the vision arm
                return StepPlan(parts=("text",), forward=lambda model, inputs: model.text(inputs["text"]))
            return None

    with pytest.raises(AssertionError, match=r"step_plan\(\('vision',\)\).forward did not run layers"):
        testing.check_family(Crossed(), _bundle(bundles, "coca"), splitter=registry("splitter").create("coca"),
                             tmp_dir=tmp_path, registered_evaluators=False)


def test_check_triple_catches_a_student_that_is_not_smaller(bundles: dict[str, Any]) -> None:
    bundle = _bundle(bundles, "coca")
    with pytest.raises(AssertionError, match="must be smaller than the teacher"):
        testing.check_triple(lambda **kw: bundle, "layer-subset", "coca")


# ----------------------------------------------------------------------------- the engine
@pytest.mark.slow  # the quickstart distills in many other tests; the toy family's run covers the kit's engine path
def test_run_tiny_distill_on_the_quickstart(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    report = testing.run_tiny_distill(tmp_path / "run", config={"student": {"ratio": 0.5}},
                                      overrides=["eval.evaluators=[\"efficiency\"]"])
    assert [e["episode"] for e in report["episodes"]] == [1, 2]
    assert report["family"] == "coca"
    assert time.perf_counter() - t0 < 60


def test_registered_installs_a_plugin_for_the_block_and_restores(plugin: Any) -> None:
    from distillctl import plugins

    def register_policies(register: Any) -> None:
        register("kit-policy", lambda *, arms, seed: None)

    before = plugins.get_plugins()
    with testing.registered(plugin("kit_plugin", register_policies=register_policies)) as loaded:
        assert plugins.get_plugins() is loaded
        assert "kit-policy" in plugins.registry("policy") and "optima" in plugins.registry("policy")
    assert plugins.get_plugins() is before and "kit-policy" not in plugins.registry("policy")

    def raises(register: Any) -> None:
        raise RuntimeError("cannot register")

    with pytest.raises(AssertionError, match="plugin 'kit_broken' .* is broken: RuntimeError: cannot register"):
        with testing.registered(plugin("kit_broken", register_policies=raises)):
            pass
    assert plugins.get_plugins() is before


def test_check_plugin_names_what_users_would_hit(plugin: Any) -> None:
    def ours(register: Any) -> None:
        register("kit-fine", lambda *, arms, seed: None)

    assert "kit-fine" in testing.check_plugin(plugin("kit_fine", register_policies=ours)).registry("policy")

    def takes_optima(register: Any) -> None:
        register("optima", lambda *, arms, seed: None)

    with pytest.raises(AssertionError, match="'optima' of plugin kit_shadow .* Use the plugin's as 'kit_shadow/optima'"):
        testing.check_plugin(plugin("kit_shadow", register_policies=takes_optima))
    future = plugin("kit_future", register_policies=ours)
    future.DISTILLCTL_PLUGIN_API = "2.5"
    with pytest.raises(AssertionError, match="requires distillctl plugin API 2.5"):
        testing.check_plugin(future)


def test_check_evaluator_refuses_the_0_1_signature() -> None:
    class Old:
        name = "old"

        def evaluate(self, model: Any, tokenizer: Any, transform: Any, dataset: Any, *, device: str = "cpu") -> dict:
            return {"x": 1.0}

    with pytest.raises(AssertionError, match=r"cannot be called as evaluate\(bundle, ctx\)"):
        testing.check_evaluator(Old, family=None, bundle=None)  # type: ignore[arg-type]
