"""Shared fixtures: offline, no stray env, and plugins that only the test chooses.

Installed third-party plugins must not change test outcomes (llm / datasette habit): before every
test the process-wide plugins are reset to the built-ins only (no entry points), and dropped after.
Tests that need their own components use ``use_plugins(*throwaway, builtins=...)``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distillctl import plugins
from distillctl.hookspecs import hookimpl


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")  # rich tables in CliRunner output: no wrapped cells
    for var in ("DISTILLCTL_DISABLE_PLUGINS", "DISTILLCTL_DEBUG"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def _builtin_plugins_only(_clean_env: None) -> Iterator[None]:
    plugins.reset_plugins(plugins.load_plugins(include_entry_points=False))
    try:
        yield
    finally:
        plugins.reset_plugins(None)


def make_plugin(name: str, *, distribution: str | None = None, version: str = "0.0.1", **hooks: Callable[..., Any]) -> Any:
    """A throw-away plugin module: ``make_plugin("p", register_policies=fn)`` (fn gets ``register``)."""
    mod = types.ModuleType(name)
    mod.distribution = distribution or name  # type: ignore[attr-defined]
    mod.version = version  # type: ignore[attr-defined]
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


@pytest.fixture
def plugin() -> Callable[..., Any]:
    """The ``make_plugin`` factory, as a fixture."""
    return make_plugin


@pytest.fixture
def use_plugins(monkeypatch: pytest.MonkeyPatch) -> Callable[..., plugins.Plugins | None]:
    """Install throw-away plugins as the process-wide plugins (reset after the test).

    ``builtins=False`` leaves the built-ins out, so a test can register names the built-ins also
    use. ``lazy=True`` defers loading to the first ``get_plugins()`` call (inside the command under
    test), so load-time errors (duplicates) surface through the CLI's error boundary.
    """

    def _use(*extra: Any, builtins: bool = True, lazy: bool = False) -> plugins.Plugins | None:
        if not builtins:
            monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", ())
        if not lazy:
            loaded = plugins.load_plugins(include_entry_points=False, extra=extra)
            plugins.reset_plugins(loaded)
            return loaded
        plugins.reset_plugins(None)
        cache: list[plugins.Plugins] = []

        def get_plugins() -> plugins.Plugins:
            if not cache:
                cache.append(plugins.load_plugins(include_entry_points=False, extra=extra))
            return cache[0]

        monkeypatch.setattr(plugins, "get_plugins", get_plugins)
        return None

    return _use


# ----------------------------------------------------------------- throw-away components
def fake_teacher(*, weights: str | None = None, device: str = "cpu", width: int = 64) -> Any:
    """Fake teacher for tests."""
    return ("teacher", weights, device, width)


def fake_student(*, teacher: Any, splitter: Any, keep: int = 2) -> Any:
    """Fake student for tests."""
    return ("student", keep)


def fake_policy(*, arms: list[tuple[str, ...]], seed: int, window: int = 8) -> Any:
    """Fake policy for tests."""
    return ("policy", window)


def fake_dataset(*, split: str = "train", size: int = 10) -> Any:
    """Fake dataset for tests."""
    return ("dataset", split, size)


@pytest.fixture
def smoke_components() -> Any:
    """A plugin registering the component names the smoke preset uses (use with builtins=False)."""

    def register_teachers(register: Any) -> None:
        register("quickstart", fake_teacher)

    def register_students(register: Any) -> None:
        register("layer-subset", fake_student)

    def register_policies(register: Any) -> None:
        register("optima", fake_policy)

    def register_datasets(register: Any) -> None:
        register("shapes", fake_dataset)

    return make_plugin(
        "smoke_components",
        distribution="smoke-components",
        register_teachers=register_teachers,
        register_students=register_students,
        register_policies=register_policies,
        register_datasets=register_datasets,
    )
