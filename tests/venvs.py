"""Fresh virtual environments for the slow install tests (plugin packages, the guide's example, wheels).

A venv made here has no pip packages of its own: it sees this environment's site-packages (torch, pip,
setuptools, pytest ...) through a ``.pth`` file, *after* its own, so nothing is downloaded and what is
installed into it wins. ``hide`` leaves entries of the parent out (through a link farm of symlinks), so a
copy installed in the parent (CI installs the first-party plugins; the test venv has distillctl editable)
can neither shadow nor stand in for the one under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without distillctl / pip / venv settings; offline, wide, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILLCTL_", "PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", COLUMNS="200", OMP_NUM_THREADS="1", **extra)
    return env


def run(cmd: list[str], *, cwd: Path | None = None, timeout: int = 600, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; a non-zero exit fails the test with the command's output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(**env), cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def make_venv(root: Path, hide: tuple[str, ...] = ()) -> Path:
    """A fresh venv under ``root`` (its python returned) that sees this environment's site-packages, minus the
    entries whose normalised name starts with one of ``hide`` (``"distillctl"`` hides the package, its
    dist-info, its editable hook and every ``distillctl_*`` plugin)."""
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    lines = []
    for i, parent in enumerate(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])):
        if not hide:
            lines.append(f"import site; site.addsitedir({parent!r})")
            continue
        farm = root / f"parent-{i}"
        farm.mkdir()
        for entry in Path(parent).iterdir():  # every package of the parent env, except the hidden ones
            low = entry.name.lower().replace("-", "_")
            if not any(low.startswith((h, f"__editable__.{h}", f"_editable_impl_{h}")) for h in hide):
                (farm / entry.name).symlink_to(entry)
        lines.append(f"import site; site.addsitedir({str(farm)!r})")
    (purelib / "_distillctl_parent_env.pth").write_text("\n".join(lines) + "\n")
    return py


def pip_install(py: Path, *sources: Path, cwd: Path | None = None) -> None:
    """Install ``sources`` (folders or wheels) into the venv of ``py``: offline, no dependencies, non-editable."""
    run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation", *map(str, sources)],
        cwd=cwd)
