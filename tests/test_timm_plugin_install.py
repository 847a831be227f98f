"""``pip install plugins/distillctl-timm`` lists its components (distribution and version); uninstalling removes them.

Slow: a fresh virtual environment that sees this environment's packages (torch, timm, distillctl)
through a filtered ``.pth`` link farm (any distillctl-timm already installed here stays hidden), an
offline, non-editable install as a user would do it, then ``pip uninstall``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_example_plugin import ROOT, make_venv, pip_install, plugins_json, run

TIMM = ROOT / "plugins" / "distillctl-timm"
EXPECTED = {("family", "timm"), ("teacher", "timm:"), ("teacher", "timm-shapes-vit"), ("student", "timm-model"),
            ("splitter", "timm"), ("dataset", "shapes-labels"), ("dataset", "image-folder"), ("evaluator", "accuracy")}


@pytest.mark.slow
def test_timm_plugin_installs_lists_and_uninstalls(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(TIMM, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    py = make_venv(tmp_path, hide=("distillctl_timm",))
    assert not {(c["kind"], c["name"]) for c in plugins_json(py)["components"]} & EXPECTED
    pip_install(py, src)
    doc = plugins_json(py)
    found = {(c["kind"], c["name"]): c for c in doc["components"] if c["distribution"] == "distillctl-timm"}
    assert set(found) == EXPECTED, doc
    assert {c["version"] for c in found.values()} == {"0.1.0"} and {c["plugin"] for c in found.values()} == {"timm"}
    assert doc["broken"] == [] and doc["clashes"] == []
    presets = run([str(py), "-m", "distillctl", "presets", "list", "--json"]).stdout
    assert "timm-quickstart" in presets and "timm-smoke" in presets
    run([str(py), "-m", "distillctl", "presets", "validate", "timm-quickstart"])
    run([str(py), "-m", "pip", "uninstall", "-y", "-q", "distillctl-timm"])
    doc = plugins_json(py)
    assert not [c for c in doc["components"] if c["distribution"] == "distillctl-timm"] and doc["broken"] == []
    assert "timm-quickstart" not in run([str(py), "-m", "distillctl", "presets", "list", "--json"]).stdout
