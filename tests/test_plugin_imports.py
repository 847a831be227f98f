"""The import rules of the tree, read from the code with ``ast`` (no import needed):

* ``distillctl/coca`` and ``distillctl/clip`` import nothing of each other nor of what wires them up (what
  they share lives in ``distillctl/openclip``), and nothing in the tree imports the 0.1 re-export modules;
* no module under ``distillctl/`` but the CLI itself (``distillctl/cli``, ``__main__``, the console script's
  module) imports ``distillctl.cli``;
* the first-party plugins (``plugins/*/``, package and tests) import only the public API that
  ``plugins/README.md`` lists ("What a plugin may import"), and every name listed exists.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "distillctl"
GUIDE = REPO / "plugins" / "README.md"
COMPAT_MODULES = ("distillctl.openclip_common", "distillctl.coca.tags", "distillctl.coca.weights")


def public_api() -> dict[str, set[str]]:
    """``{module: names}`` from the guide's "What a plugin may import" table."""
    text = GUIDE.read_text(encoding="utf-8")
    table = text[text.index("#### What a plugin may import"):]
    table = table[: table.index("\n## ")]
    api: dict[str, set[str]] = {}
    for module, names in re.findall(r"^\| `(distillctl[\w.]*)` \| (.*) \|$", table, re.M):
        api[module] = {n for n in re.findall(r"`(\w+)`", names) if n[0].isalpha() or n.startswith("__")}
    return api


def imports(path: Path) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """``(line, module, names)`` of every import in a file (``names`` empty for ``import x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, tuple(a.name for a in node.names)


def _modules_imported(path: Path) -> set[str]:
    """Every module a file imports, ``from distillctl import x`` counted as ``distillctl.x`` too."""
    out = set()
    for _, module, names in imports(path):
        out.add(module)
        out.update(f"{module}.{n}" for n in names)
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_walker_sees_imports_inside_functions(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    from distillctl.clip import models\n    from . import sibling\n")
    assert _modules_imported(f) == {"os", "distillctl.clip", "distillctl.clip.models"}


@pytest.mark.parametrize(("leaf", "other"), [("coca", "clip"), ("clip", "coca")])
def test_coca_and_clip_import_nothing_of_each_other(leaf: str, other: str) -> None:
    files = _files(PKG / leaf)
    assert files
    # leaves: not the other family, nor what wires the families up (built-in plugins, the quickstart teacher,
    # the engine, the CLI); what they share lives in distillctl/openclip
    above = (other, "quickstart", "default_plugins", "engine", "cli")
    bad = [f"{f.relative_to(REPO)}: {m}" for f in files for m in _modules_imported(f)
           if any(m == f"distillctl.{a}" or m.startswith(f"distillctl.{a}.") for a in above)]
    assert not bad, f"distillctl/{leaf} imports {', '.join(above)} (share through distillctl/openclip): {bad}"


def test_the_shared_open_clip_room_imports_no_family() -> None:
    bad = [f"{f.relative_to(REPO)}: {m}" for f in _files(PKG / "openclip") for m in _modules_imported(f)
           if any(m == f"distillctl.{a}" or m.startswith(f"distillctl.{a}.") for a in ("coca", "clip", "quickstart"))]
    assert not bad, f"distillctl/openclip is what coca and clip share: it imports neither ({bad})"


def _entry_points() -> set[str]:
    """The files that start the CLI: ``__main__.py`` and the console script's module (``[project.scripts]``)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    scripts = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    assert scripts, "pyproject.toml has no [project.scripts]"
    modules = re.findall(r'^\w[\w-]* = "([\w.]+):\w+"', scripts[1], re.M)
    return {"__main__.py", *(m.removeprefix("distillctl.").replace(".", "/") + ".py" for m in modules)}


def test_no_library_module_imports_the_cli() -> None:
    entry = _entry_points()
    assert len(entry) >= 2  # __main__.py and the console script's module
    bad = []
    for f in _files(PKG):
        rel = f.relative_to(PKG)
        for m in _modules_imported(f):
            if (m == "distillctl.cli" or m.startswith("distillctl.cli.")) and rel.parts[0] != "cli" and rel.as_posix() not in entry:
                bad.append(f"{rel}: {m}")
    assert not bad, f"only distillctl/cli and the entry points ({', '.join(sorted(entry))}) may import the CLI: {bad}"


def test_nothing_in_the_tree_uses_the_0_1_re_exports() -> None:
    me = Path(__file__).resolve()
    files = [f for folder in (PKG, REPO / "plugins", REPO / "tests") for f in _files(folder) if f.resolve() != me]
    bad = [f"{f.relative_to(REPO)}: {m}" for f in files for m in _modules_imported(f)
           if m in COMPAT_MODULES and f.with_suffix("").relative_to(REPO).as_posix().replace("/", ".") not in COMPAT_MODULES]
    assert not bad, f"import the new homes (distillctl.openclip, distillctl.hf_cache), not the 0.1 re-exports: {bad}"


def test_the_0_1_import_paths_still_work() -> None:
    from distillctl import data, hf_cache, students, torch_utils
    from distillctl.coca import models as coca_models
    from distillctl.coca import tags as old_tags
    from distillctl.coca import weights as old_weights
    from distillctl.openclip import export, family, tags, tokenizer, weights
    from distillctl.openclip_common import OpenClipFamilyMixin, export_local_dir
    from distillctl.quickstart import ImageTransform, WordTokenizer

    assert OpenClipFamilyMixin is family.OpenClipFamilyMixin and export_local_dir is export.export_local_dir
    assert old_tags.preflight_weights is tags.preflight_weights and old_tags.hf_cache_dir is hf_cache.hf_cache_dir
    assert old_tags.offline is hf_cache.offline and old_tags.KNOWN_TAGS is tags.KNOWN_TAGS
    assert old_weights.resolve_weights is weights.resolve_weights and old_weights.file_sha256 is weights.file_sha256
    assert coca_models.make_tokenizer is tokenizer.make_tokenizer
    assert WordTokenizer is data.WordTokenizer and ImageTransform is data.ImageTransform
    assert students.model_device is torch_utils.model_device


def test_the_import_table_lists_names_that_exist() -> None:
    api = public_api()
    assert {"distillctl", "distillctl.hookspecs", "distillctl.interfaces", "distillctl.testing"} <= set(api)
    for module, names in api.items():
        mod = importlib.import_module(module)
        assert names, f"plugins/README.md lists no names for {module}"
        for name in names:
            assert hasattr(mod, name), f"plugins/README.md lists {module}.{name}, which does not exist"


def _plugin_files() -> list[Path]:
    """The plugins' sources and tests (not the copies ``pip install`` leaves in ``build/``)."""
    return [p for folder in sorted((REPO / "plugins").iterdir()) if folder.is_dir() for p in _files(folder)
            if "build" not in p.relative_to(folder).parts]


def undocumented_imports(files: list[Path], api: dict[str, set[str]]) -> list[str]:
    """``file:line: what`` for every ``distillctl`` import in ``files`` that the import table does not list."""
    bad = []
    for f in files:
        for line, module, names in imports(f):
            if module != "distillctl" and not module.startswith("distillctl."):
                continue
            where = f"{f.relative_to(REPO) if f.is_relative_to(REPO) else f}:{line}"
            if module not in api:  # `from distillctl import testing` names a documented module
                if not names or any(f"{module}.{n}" not in api for n in names):
                    bad.append(f"{where}: {module} is not in the guide's import table")
                continue
            undocumented = [n for n in names if n not in api[module] and f"{module}.{n}" not in api]
            if undocumented:
                bad.append(f"{where}: {module}.{', '.join(undocumented)} is not in the guide's import table")
    return bad


def test_first_party_plugins_import_only_the_documented_api() -> None:
    files = _plugin_files()
    assert any("distillctl-timm" in str(f) for f in files) and any("distillctl-toy-family" in str(f) for f in files)
    bad = undocumented_imports(files, public_api())
    assert not bad, "first-party plugins must use only the documented plugin API:\n" + "\n".join(bad)


def test_the_plugin_check_catches_internal_imports(tmp_path: Path) -> None:
    f = tmp_path / "bad.py"
    f.write_text("from distillctl import hookimpl, testing\nfrom distillctl.data import SkipItem\n\n"
                 "def g():\n    from distillctl.openclip.tags import hf_cache_dir\n    from distillctl.data import loader\n"
                 "    import distillctl.engine\n")
    bad = undocumented_imports([f], public_api())
    assert [b.split(": ", 1)[1] for b in bad] == [
        "distillctl.openclip.tags is not in the guide's import table",
        "distillctl.data.loader is not in the guide's import table",
        "distillctl.engine is not in the guide's import table",
    ]
