"""The plugin guide (``plugins/README.md``) keeps its promises: what it shows runs, what it names exists.

* every ``python`` block runs (the file blocks of section 8 as the package they make up, the others as
  snippets), every ``toml`` block parses;
* section 8 is exactly ``plugins/distillctl-toy-family``, file for file (CI installs and tests that package);
* every ``distillctl.x.y`` the guide names resolves, every relative link points at something;
* a package written from section 8 alone passes the conformance kit in-process (fast) and, installed next
  to a distillctl *wheel* in a fresh virtual environment with no checkout on its path, runs its own tests
  (slow).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distillctl import plugins, testing

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "plugins" / "README.md"
EXAMPLE = REPO / "plugins" / "distillctl-toy-family"
FENCE = re.compile(r"(?:^<!-- file: (?P<file>\S+) -->\n)?^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)\n(?P=indent)```$",
                   re.S | re.M)


def _blocks() -> list[tuple[str | None, str, str]]:
    """``(file or None, language, text)`` of every fenced block of the guide, in order."""
    return [(m["file"], m["lang"], m["body"] + "\n") for m in FENCE.finditer(GUIDE.read_text(encoding="utf-8"))]


def _files() -> dict[str, str]:
    return {f: text for f, _, text in _blocks() if f}


def _write_package(root: Path) -> Path:
    """The package of section 8, written from the guide's text alone."""
    for rel, text in _files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def toy_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The guide's package importable as ``distillctl_toy_family`` for one test (then forgotten)."""
    pkg = _write_package(tmp_path / "from-guide")
    monkeypatch.syspath_prepend(str(pkg))
    for name in [m for m in sys.modules if m.startswith("distillctl_toy_family")]:
        monkeypatch.delitem(sys.modules, name)
    yield pkg
    for name in [m for m in sys.modules if m.startswith("distillctl_toy_family")]:
        sys.modules.pop(name, None)


def test_section_8_is_the_example_package_file_for_file() -> None:
    files = _files()
    ignored = ("__pycache__", "build")  # what installing and testing the package leave behind
    on_disk = {p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("*")
               if p.is_file() and not p.name.startswith(".") and not any(x in p.parts for x in ignored)
               and ".egg-info" not in str(p)}
    assert set(files) == on_disk, "section 8 of plugins/README.md must show every file of plugins/distillctl-toy-family"
    for rel, text in files.items():
        assert text == (EXAMPLE / rel).read_text(encoding="utf-8"), f"plugins/README.md shows another {rel} than the package"


def test_toml_blocks_parse() -> None:
    tomls = [text for _, lang, text in _blocks() if lang == "toml"]
    assert len(tomls) >= 2
    for text in tomls:
        tomllib.loads(text)


def test_python_snippets_run(toy_on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    snippets = [text for f, lang, text in _blocks() if lang == "python" and not f]
    assert len(snippets) >= 3
    for i, text in enumerate(snippets):
        namespace: dict[str, Any] = {"__name__": f"guide_snippet_{i}"}
        exec(compile(text, f"plugins/README.md python block {i}", "exec"), namespace)  # noqa: S102


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_distillctl_name_and_link_of_the_guide_exists() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    names = set(re.findall(r"`(distillctl(?:\.[A-Za-z_]\w*)+)", text))
    assert "distillctl.testing" in names and "distillctl.export.save_weights" in names
    for dotted in sorted(names):
        _resolve(dotted)
    links = re.findall(r"\]\((?!https?:|#)([^)#\s]+)", text)
    assert "distillctl-toy-family" in links and "../distillctl/default_plugins" in links
    for target in links:
        assert (GUIDE.parent / target).exists(), f"plugins/README.md links to {target}, which does not exist"


def test_the_guides_package_passes_the_kit_in_process(toy_on_path: Path, tmp_path: Path) -> None:
    import distillctl_toy_family
    import torch
    from distillctl_toy_family.family import ToyFamily, ToySplitter, toy_half, toy_teacher

    assert Path(distillctl_toy_family.__file__).is_relative_to(toy_on_path)  # the guide's copy, not the repo's
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    plugins.reset_plugins(plugins.load_plugins(include_entry_points=False, extra=(distillctl_toy_family,)))
    try:
        parts = testing.check_triple(toy_teacher, toy_half, ToySplitter, ToyFamily())
        assert parts["teacher"].family == "toy" and parts["teacher"].splitter == "toy"
        testing.check_family(ToyFamily(), toy_teacher(), splitter=ToySplitter(), tmp_dir=tmp_path)
    finally:
        plugins.reset_plugins(None)
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ slow: outside the repository
@pytest.mark.slow
def test_a_package_written_from_the_guide_passes_its_tests_against_the_installed_wheel(tmp_path: Path) -> None:
    from venvs import make_venv, pip_install, run

    # 1. distillctl as a user gets it: a wheel (built the way `pip install` builds one), not this checkout
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)])
    wheel = next(wheels.glob("distillctl-*.whl"))
    # 2. a fresh venv that sees torch, open_clip, pytest ... of this environment, but no distillctl and no
    #    distillctl plugin (neither this checkout's editable install nor CI's installed first-party plugins)
    py = make_venv(tmp_path, hide=("distillctl",))
    pip_install(py, wheel)
    # 3. the author's package: section 8 of the guide, written into an empty folder, installed
    src = _write_package(tmp_path / "distillctl-toy-family")
    pip_install(py, src, cwd=tmp_path)
    code = "import distillctl, distillctl_toy_family as t; print(distillctl.__file__); print(t.__file__)"
    where = run([str(py), "-c", code], cwd=tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(tmp_path / "venv") for p in where), f"not the installed copies: {where}"
    # 4. its own tests (the conformance kit, and the real engine for two episodes), as section 8 says to run them
    proc = run([str(py), "-m", "pytest", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider", "tests"], cwd=src)
    assert re.search(r"\b\d+ passed\b", proc.stdout) and "failed" not in proc.stdout, proc.stdout
    # 5. and distillctl finds it through its entry point
    doc = json.loads(run([str(py), "-m", "distillctl", "plugins", "--json"], cwd=tmp_path).stdout)
    mine = {(c["kind"], c["name"]) for c in doc["components"] if c["distribution"] == "distillctl-toy-family"}
    assert mine == {("family", "toy"), ("teacher", "toy"), ("student", "toy-half"), ("splitter", "toy")}, doc
    assert doc["broken"] == []
