"""A whole new model family as a plugin: ``plugins/distillctl-toy-family`` (plain torch, no
open_clip) brings a family, a teacher, a student and a splitter, and ``distill``, ``eval``, ``inspect``
and ``compare`` work on it through the CLI with no change to distillctl.

The fast tests register the package's module in-process (``use_plugins``) and drive the Typer app with
``CliRunner``; the slow ones pip-install the package into a fresh venv (offline, this environment's
packages visible through a ``.pth`` file: ``tests/venvs.py``) and run the real
``python -m distillctl``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from distillctl.cli import app

PKG = Path(__file__).resolve().parent.parent / "plugins" / "distillctl-toy-family"

TINY = ["--set", "train.probe_batches=1", "--set", "eval.samples=100", "--set", "train.threads=1"]
DISTILL = ["distill", "--teacher", "toy", "--student", "toy-half", "--data", "shapes", "--episodes", "2",
           "--episode-steps", "2", "--batch-size", "8", *TINY]
COMPARE = ["compare", "--policies", "optima,uniform", "--seeds", "0", "--set", "teacher.name=toy",
           "--set", "student.name=toy-half", "--set", "train.episodes=2", "--set", "train.episode_steps=2",
           "--set", "train.batch_size=8", "--set", "data.workers=0", *TINY]


# ---------------------------------------------------------------- in-process (fast)
@pytest.fixture
def toy_module(monkeypatch: pytest.MonkeyPatch, use_plugins: Any) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(PKG))
    import distillctl_toy_family
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on shared CPUs: one thread is by far the fastest
    use_plugins(distillctl_toy_family)
    yield distillctl_toy_family
    torch.set_num_threads(threads)
    for name in [m for m in sys.modules if m.startswith("distillctl_toy_family")]:
        sys.modules.pop(name, None)


def _invoke(args: list[str]) -> Any:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"distillctl {' '.join(args)} failed ({result.exit_code}):\n{result.output}\n{result.exception!r}"
    return result


def test_distill_eval_compare_inspect_in_process(toy_module: Any, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _invoke([*DISTILL, "--out", str(out), "--quiet"])
    report = json.loads((out / "report.json").read_text())
    assert report["family"] == "toy"
    assert {e["arm"] for e in report["episodes"]} <= {"image", "text"}
    assert report["eval"]["student"] and report["eval"]["teacher"]  # the family's default evaluator (retrieval) ran

    doc = json.loads(_invoke(["eval", str(out), "--samples", "32", "--json"]).stdout)
    assert doc["student"] and doc["teacher"]

    _invoke([*COMPARE, "--out", str(tmp_path / "cmp"), "--quiet"])
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir() if p.is_dir())

    doc = json.loads(_invoke(["inspect", "--teacher", "toy", "--student", "toy-half", "--json"]).stdout)
    assert "image" in json.dumps(doc) and "text" in json.dumps(doc)


# ---------------------------------------------------------------- installed into a venv (slow)
@pytest.fixture(scope="module")
def toy_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with distillctl-toy-family installed; distillctl and torch come from this venv (a copy of
    the toy family that CI installed here is hidden)."""
    from venvs import make_venv, pip_install

    root = tmp_path_factory.mktemp("toyfamily")
    src = root / "src"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__", "tests", "build", "*.egg-info"))
    py = make_venv(root, hide=("distillctl_toy_family",))
    pip_install(py, src)
    return py


def _cli(py: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    from venvs import run

    return run([str(py), "-m", "distillctl", *args], timeout=timeout)


@pytest.mark.slow
def test_installed_family_lists_its_components(toy_venv: Path) -> None:
    doc = json.loads(_cli(toy_venv, "plugins", "--json").stdout)
    mine = {(c["kind"], c["name"]) for c in doc["components"] if c["distribution"] == "distillctl-toy-family"}
    assert mine == {("family", "toy"), ("teacher", "toy"), ("student", "toy-half"), ("splitter", "toy")}, doc
    assert {c["version"] for c in doc["components"] if c["distribution"] == "distillctl-toy-family"} == {"0.1.0"}
    assert doc["broken"] == []


@pytest.mark.slow
def test_installed_family_distills_evaluates_inspects_and_compares(toy_venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _cli(toy_venv, *DISTILL, "--out", str(out), "--quiet")
    report = json.loads((out / "report.json").read_text())
    assert report["family"] == "toy" and len(report["episodes"]) == 2
    doc = json.loads(_cli(toy_venv, "eval", str(out), "--samples", "32", "--json").stdout)
    assert doc["student"] and doc["teacher"]
    proc = _cli(toy_venv, "inspect", "--teacher", "toy", "--student", "toy-half")
    assert "image" in proc.stdout and "text" in proc.stdout
    _cli(toy_venv, *COMPARE, "--out", str(tmp_path / "cmp"), "--quiet")
    assert any((tmp_path / "cmp").iterdir())
