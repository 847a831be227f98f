"""A pip-installed third-party plugin adds a policy through the ``distillctl`` entry-point group.

The slow test installs ``tests/plugin_pkgs/distillctl-policy-greedy`` (version 0.3.1) into a fresh
virtual environment that sees this environment's packages through a ``.pth`` file (so torch is not
reinstalled), offline (``--no-index --no-build-isolation``), and checks ``distillctl plugins --json``.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

PKG = Path(__file__).resolve().parent / "plugin_pkgs" / "distillctl-policy-greedy"


def _run(cmd: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILLCTL_", "PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with distillctl-policy-greedy installed; distillctl itself comes from this venv."""
    root = tmp_path_factory.mktemp("thirdparty")
    src = root / "src"
    shutil.copytree(PKG, src)  # build in a copy: no build/ or egg-info left in the repo
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], _env())
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], _env()).stdout.strip()
    # make this environment's packages (torch, pip, setuptools, editable distillctl) visible to the new venv
    parents = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()])
    lines = [f"import site; site.addsitedir({p!r})" for p in parents if Path(p).is_dir()]
    (Path(purelib) / "_distillctl_parent_env.pth").write_text("\n".join(lines) + "\n")
    _run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation", str(src)],
        _env(),
    )
    return py


def _plugins_json(py: Path, **env: str) -> dict[str, Any]:
    proc = _run([str(py), "-m", "distillctl", "plugins", "--json"], _env(**env), timeout=120)
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_installed_plugin_registers_its_policy(plugin_venv: Path) -> None:
    doc = _plugins_json(plugin_venv)
    greedy = [c for c in doc["components"] if c["name"] == "greedy"]
    assert len(greedy) == 1, doc
    entry = greedy[0]
    assert entry["kind"] == "policy"
    assert entry["plugin"] == "greedy"  # the entry-point name
    assert entry["distribution"] == "distillctl-policy-greedy"
    assert entry["version"] == "0.3.1"
    assert entry["summary"].startswith("Greedy: always the arm with the best mean reward")
    assert doc["broken"] == []


@pytest.mark.slow
def test_installed_plugin_can_be_blocked(plugin_venv: Path) -> None:
    for blocked in ("greedy", "distillctl-policy-greedy"):
        doc = _plugins_json(plugin_venv, DISTILLCTL_DISABLE_PLUGINS=blocked)
        assert not [c for c in doc["components"] if c["name"] == "greedy"], blocked


@pytest.mark.slow
def test_installed_plugin_shows_in_the_table(plugin_venv: Path) -> None:
    proc = _run([str(plugin_venv), "-m", "distillctl", "plugins"], _env(COLUMNS="200"), timeout=120)
    row = next(line for line in proc.stdout.splitlines() if " greedy " in line)
    assert "distillctl-policy-greedy 0.3.1" in row


# ---------------------------------------------------------------- the plugin's code, in-process (fast)
@pytest.fixture
def greedy_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(PKG))
    import distillctl_policy_greedy

    yield distillctl_policy_greedy
    sys.modules.pop("distillctl_policy_greedy", None)


def test_greedy_policy_plays_each_arm_then_the_best(greedy_module: Any, use_plugins: Any) -> None:
    loaded = use_plugins(greedy_module, builtins=False)
    arms = [("vision",), ("text",), ("multimodal",)]
    policy = loaded.registry("policy").create("greedy", arms=arms, seed=0)
    picks = []
    for episode, reward in enumerate([0.1, 0.5, 0.2, 0.0, 0.0]):
        arm = policy.select(episode)
        picks.append(arm)
        policy.update(arm, reward)
    assert picks[:3] == [0, 1, 2]  # every arm once
    assert picks[3] == 1  # then the best mean (0.5)
    state = json.loads(json.dumps(policy.state_dict()))  # JSON-serialisable
    clone = greedy_module.make_greedy(arms=arms, seed=0)
    clone.load_state_dict(state)
    assert clone.posterior() == policy.posterior() and clone.select(5) == policy.select(5)
