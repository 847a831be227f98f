"""``plugins/distillctl-example`` is a template: copied to a temporary folder and renamed, it installs and is picked up.

The slow test renames the four things its README lists (distribution, entry point, package, component
name), installs the copy into a fresh virtual environment that sees this environment's packages
(torch, distillctl) through a ``.pth`` file, offline and non-editable, and checks ``distillctl plugins
--json``. The parent environment is seen through a filtered link farm, so a copy of the example already
installed there (CI installs the first-party plugins) cannot hide or shadow the renamed one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from venvs import make_venv, pip_install, run  # the one fresh-venv helper of the install tests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "plugins" / "distillctl-example"


def plugins_json(py: Path) -> dict[str, Any]:
    return json.loads(run([str(py), "-m", "distillctl", "plugins", "--json"], timeout=180).stdout)


def rename_copy(dest: Path) -> Path:
    """Copy the example and rename what its README says to rename: mine-ucb from distillctl-mine."""
    src = dest / "distillctl-mine"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    (src / "distillctl_example").rename(src / "distillctl_mine")
    for path in [src / "pyproject.toml", *src.rglob("*.py"), src / "README.md"]:
        text = path.read_text()
        text = (text.replace("distillctl-example", "distillctl-mine").replace("distillctl_example", "distillctl_mine")
                .replace('example = "distillctl_mine"', 'mine = "distillctl_mine"').replace("discounted-ucb", "mine-ucb")
                .replace('"d-ucb"', '"m-ucb"'))
        path.write_text(text)
    return src


@pytest.mark.slow
def test_renamed_copy_of_the_example_installs_and_is_picked_up(tmp_path: Path) -> None:
    src = rename_copy(tmp_path)
    py = make_venv(tmp_path, hide=("distillctl_mine",))
    pip_install(py, src)
    doc = plugins_json(py)
    mine = [c for c in doc["components"] if c["name"] == "mine-ucb"]
    assert len(mine) == 1, doc
    assert mine[0]["kind"] == "policy" and mine[0]["plugin"] == "mine"
    assert mine[0]["distribution"] == "distillctl-mine" and mine[0]["version"] == "0.1.0"
    assert doc["broken"] == [] and doc["clashes"] == []
    # its own tests pass in the copy, against the installed package
    run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(src / "tests")], timeout=300)
