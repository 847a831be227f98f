"""The toy family's own tests: its components through distillctl's conformance kit.

This is what a plugin author's test file looks like: ``distillctl.testing`` checks the contracts
(layer contract, family methods, export -> load, evaluators) and ``run_tiny_distill`` runs the real
engine for two episodes. Run from the package folder once the package is installed
(``pip install -e . && pytest tests``; ``pytest -m slow tests`` for the engine run).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distillctl_toy_family
import pytest
from distillctl_toy_family.family import ToyFamily, ToySplitter, toy_half, toy_teacher

from distillctl import testing


@pytest.fixture(autouse=True)
def toy_registered() -> Iterator[None]:
    """The built-ins plus this package's hooks (not whatever else is installed), for the test only."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
    try:
        with testing.registered(distillctl_toy_family):
            yield
    finally:
        torch.set_num_threads(threads)


def test_the_plugin_loads_cleanly() -> None:
    loaded = testing.check_plugin(distillctl_toy_family)  # not broken, no clash, no name a built-in shadows
    assert "toy-half" in loaded.registry("student")


@pytest.fixture(scope="module")
def teacher() -> Any:
    return toy_teacher()


def test_teacher_student_splitter_keep_the_layer_contract() -> None:
    parts = testing.check_triple(toy_teacher, toy_half, ToySplitter, ToyFamily())
    assert parts["student"].layer_map == {"image": {"image.blocks": [1, 3]}, "text": {"text.blocks": [1, 3]}}


def test_the_generic_layer_subset_student_works_too() -> None:
    # the family has build + with_depths, so distillctl's own layer-subset student applies to it
    parts = testing.check_triple("toy", "layer-subset", "toy", student_options={"depths": {"image": 1, "text": 3}})
    assert parts["student"].layer_map["image"] == {"image.blocks": [3]}


def test_family_contract(teacher: Any, tmp_path: Path) -> None:
    result = testing.check_family(ToyFamily(), teacher, splitter=ToySplitter(), tmp_dir=tmp_path)
    assert set(result["masks"]) == {"text"}  # the image tower has no padding


@pytest.mark.parametrize("evaluator", ToyFamily.evaluators)
def test_evaluators(evaluator: str, teacher: Any) -> None:
    testing.check_evaluator(evaluator, ToyFamily(), teacher, testing.tiny_shapes(8, split="test"), teacher=teacher)


def test_teacher_is_the_same_everywhere() -> None:
    a, b = toy_teacher(), toy_teacher()
    assert a.weights_hash == b.weights_hash and a.weights == "random"


@pytest.mark.slow  # about 10 s: the real engine, two episodes
def test_two_episodes_of_the_real_engine(tmp_path: Path) -> None:
    report = testing.run_tiny_distill(tmp_path / "run", teacher="toy", student="toy-half",
                                      overrides=['eval.evaluators=["retrieval"]'])
    assert report["family"] == "toy"
    assert set(report["student"]["layer_map"]) == {"image", "text"}
