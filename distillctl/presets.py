"""Bundled presets: run configs shipped with distillctl, found by name.

A preset is a TOML run config (see :mod:`distillctl.config`) that holds only what differs from the
defaults. Bundled presets live in the repository's top-level ``presets/`` directory and ship inside
the wheel as ``distillctl/_presets/``. Lookup order: ``importlib.resources`` ``distillctl/_presets``
when it exists (installed wheel), else ``<repo>/presets`` next to the package (editable install or
source checkout).

Header format. A preset file starts with comment lines::

    # <one-line summary>
    # run: distillctl distill --preset NAME [more options]
    # (any further comment lines: why the values are what they are)

    [teacher]
    name = "quickstart"
    ...

The first comment line is the summary shown by ``distillctl presets list``; the first comment line
that starts with ``run:`` is the launch command. Presets are data: they name registered components,
never import paths.

Plugin presets. An installed distribution can ship presets too: an entry point in the group
``distillctl.presets`` names a package whose folder holds ``*.toml`` files::

    [project.entry-points."distillctl.presets"]
    timm = "distillctl_timm.presets"

They are found by name after the bundled ones (a bundled name wins) and listed by ``distillctl presets
list``, only while the same distribution's components are loaded (blocked with the plugin by
``DISTILLCTL_DISABLE_PLUGINS``, entry-point or distribution name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillctl.errors import DistillctlError
from distillctl.registry import did_you_mean

SUFFIX = ".toml"
PRESETS_GROUP = "distillctl.presets"


class UnknownPresetError(DistillctlError):
    """No bundled preset has this name, or the preset file does not exist."""


@dataclass(frozen=True)
class PresetInfo:
    name: str  # file stem, e.g. "smoke"
    path: Path
    summary: str  # first header comment line
    command: str  # the "# run: ..." line, without "run:"
    provider: str = "distillctl"  # the distribution that ships it


def presets_dir() -> Path | None:
    """The directory of the bundled presets, or None if there is none."""
    try:
        from importlib.resources import files

        shipped = files("distillctl") / "_presets"
        if shipped.is_dir():
            return Path(str(shipped))
    except (ModuleNotFoundError, OSError, TypeError):  # pragma: no cover - exotic importers
        pass
    checkout = Path(__file__).resolve().parent.parent / "presets"
    return checkout if checkout.is_dir() else None


def preset_header(path: Path) -> tuple[str, str]:
    """``(summary, command)`` from the leading comment lines; ``""`` for whatever is missing."""
    summary = command = ""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return summary, command
    for raw in lines:
        line = raw.strip()
        if not line.startswith("#"):
            break  # the header ends at the first non-comment line
        text = line.lstrip("#").strip()
        if text.startswith("run:"):
            command = command or text[len("run:") :].strip()
        elif text and not summary:
            summary = text
    return summary, command


def plugin_preset_dirs() -> list[tuple[Path, str]]:
    """``(folder, "distribution version")`` of every installed ``distillctl.presets`` entry point that is not
    blocked; an entry point whose package cannot be found is skipped (``distillctl plugins`` reports broken plugins)."""
    import importlib.metadata as md
    from importlib.util import find_spec

    from distillctl.plugins import disabled_plugins, get_plugins

    blocked = disabled_plugins()
    # a distribution's presets come with its components: only distributions whose plugins are loaded
    loaded = {p.distribution for p in get_plugins().provenance.values()}
    out = []
    for ep in md.entry_points(group=PRESETS_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if ep.name in blocked or dist in blocked or dist not in loaded:
            continue
        try:  # the package's folder, without importing the package (no torch at listing time)
            spec = find_spec(ep.value.split(":")[0].strip())
        except (ImportError, ValueError):
            continue
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if locations and Path(locations[0]).is_dir():
            out.append((Path(locations[0]), f"{dist} {ep.dist.version if ep.dist is not None else '?'}"))
    return out


def list_presets(*, include_plugins: bool = False) -> list[PresetInfo]:
    """Every bundled preset, sorted by name; with ``include_plugins``, then the installed plugins' presets
    whose names no bundled preset (or earlier plugin) has."""
    root = presets_dir()
    dirs = ([(root, "distillctl")] if root is not None else []) + (plugin_preset_dirs() if include_plugins else [])
    out, seen = [], set()
    for folder, provider in dirs:
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            summary, command = preset_header(path)
            out.append(PresetInfo(path.stem, path, summary, command, provider))
    return out


def _looks_like_path(text: str) -> bool:
    return text.endswith(SUFFIX) or "/" in text or "\\" in text or text.startswith(("~", "."))


def find_preset(name_or_path: str | Path) -> Path:
    """The file of a bundled preset name, or ``name_or_path`` itself if it is an existing .toml file."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        if path.is_file():
            return path
        stem_hint = ""
        if path.stem in {p.name for p in list_presets(include_plugins=True)}:
            stem_hint = f" (did you mean the bundled preset {path.stem!r}?)"
        raise UnknownPresetError(
            f"preset file {text} not found{stem_hint}.",
            hint="Give a path to an existing .toml file or a bundled name (see `distillctl presets list`).",
        )
    everything = list_presets(include_plugins=True)
    presets = {p.name: p.path for p in everything}
    if text in presets:
        return presets[text]
    did = did_you_mean(text, sorted(presets))  # plugin presets too
    names = [p.name for p in everything if p.provider == "distillctl"]  # the order of `presets list`
    listing = ", ".join(names) if names else "(none bundled)"  # plugin presets: `distillctl presets list`
    raise UnknownPresetError(f"unknown preset {text!r}.{did} Bundled presets: {listing}.")


def preset_display_name(given: str | Path, path: Path) -> str:
    """How messages name a preset: the bundled name, or the path as the user typed it."""
    roots = [presets_dir(), *(d for d, _ in plugin_preset_dirs())]
    if str(given) == path.stem and any(r is not None and path.parent.resolve() == r.resolve() for r in roots):
        return path.stem
    return str(given)


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """The raw (not yet validated) config of a preset; bad TOML is a ConfigError naming the file."""
    from distillctl.config import load_toml

    return load_toml(find_preset(name_or_path))
