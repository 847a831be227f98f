"""Plugin loading: built-ins through the same hooks, broken plugins reported, blocking, duplicates."""

from __future__ import annotations

import inspect
from typing import Any

import pluggy
import pytest

from distillctl import hookspecs, plugins
from distillctl.errors import DuplicateComponentError, PluginError


def fake_policy(*, arms: list[tuple[str, ...]], seed: int, window: int = 8) -> Any:
    """Fake policy for tests."""
    return ("policy", window)


def _raises(register: Any) -> None:
    raise RuntimeError("boom: cannot find my weights")


def _registers_greedy(register: Any) -> None:
    register("greedy", fake_policy, aliases=("g",), summary="Always the best arm so far.")


def test_builtins_load_cleanly() -> None:
    loaded = plugins.load_plugins(include_entry_points=False)
    assert loaded.broken == [], [b.line() for b in loaded.broken]
    assert set(loaded.registries) == set(plugins.KINDS.values())
    for modname in plugins.DEFAULT_PLUGINS:
        assert loaded.pm.has_plugin(modname)


def test_every_hookspec_is_documented() -> None:
    specs = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "distillctl_spec")]
    assert set(plugins.KINDS) <= set(specs)
    for name in specs:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc.split()) >= 5, f"hookspec {name} needs a docstring"


def test_hook_that_raises_is_reported_and_others_still_register(plugin: Any) -> None:
    bad = plugin("bad_plugin", distribution="distillctl-bad", register_policies=_raises)
    good = plugin("good_plugin", distribution="distillctl-good", version="1.2", register_policies=_registers_greedy)
    loaded = plugins.load_plugins(include_entry_points=False, extra=(bad, good))
    assert len(loaded.broken) == 1
    line = loaded.broken[0].line()
    assert line == "plugin 'bad_plugin' (distillctl-bad) is broken: RuntimeError: boom: cannot find my weights"
    entry = loaded.registry("policy").get("greedy")
    assert entry.provenance.distribution == "distillctl-good" and entry.provenance.version == "1.2"
    assert loaded.registry("policy").get("g") is entry


def test_disable_plugins_env_blocks_by_name_and_distribution(plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    good = plugin("good_plugin", distribution="distillctl-good", register_policies=_registers_greedy)
    assert "greedy" in plugins.load_plugins(include_entry_points=False, extra=(good,)).registry("policy")

    monkeypatch.setenv("DISTILLCTL_DISABLE_PLUGINS", "good_plugin")
    loaded = plugins.load_plugins(include_entry_points=False, extra=(good,))
    assert "greedy" not in loaded.registry("policy")
    assert not loaded.pm.has_plugin("good_plugin")

    monkeypatch.setenv("DISTILLCTL_DISABLE_PLUGINS", " other , distillctl-good ")
    assert "greedy" not in plugins.load_plugins(include_entry_points=False, extra=(good,)).registry("policy")


def test_disable_plugins_env_blocks_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLCTL_DISABLE_PLUGINS", "distillctl.default_plugins.policies")
    loaded = plugins.load_plugins(include_entry_points=False)
    assert not loaded.pm.has_plugin("distillctl.default_plugins.policies")
    assert loaded.pm.has_plugin("distillctl.default_plugins.datasets")
    assert len(loaded.registry("policy")) == 0


def test_duplicate_across_plugins_names_both(plugin: Any) -> None:
    a = plugin("plugin_a", distribution="distillctl-a", version="1.0", register_policies=_registers_greedy)
    b = plugin("plugin_b", distribution="distillctl-b", version="2.0", register_policies=_registers_greedy)
    with pytest.raises(DuplicateComponentError) as info:
        plugins.load_plugins(include_entry_points=False, extra=(a, b))
    msg = str(info.value)
    assert "duplicate policy name 'greedy'" in msg
    # the first plugin to register owns the name; the message names it first
    assert "registered by plugin_a (distillctl-a 1.0) and by plugin_b (distillctl-b 2.0)" in msg


def test_misspelt_hookimpl_fails_loudly(plugin: Any) -> None:
    typo = plugin("typo_plugin", register_polices=_registers_greedy)
    with pytest.raises(PluginError, match="unknown hook.*register_polices"):
        plugins.load_plugins(include_entry_points=False, extra=(typo,))


def test_get_plugins_caches_and_registry_reads_it(use_plugins: Any, plugin: Any) -> None:
    loaded = use_plugins(plugin("good_plugin", register_policies=_registers_greedy), builtins=False)
    assert plugins.get_plugins() is loaded
    assert plugins.registry("policy").names() == ["greedy"]


def test_observer_that_raises_is_only_a_warning(use_plugins: Any, plugin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[float] = []

    def on_episode_end(episode: int, reward: float) -> None:
        seen.append(reward)

    def bad_on_run_end(out_dir: str) -> None:
        raise ValueError("disk full")

    use_plugins(plugin("watcher", on_episode_end=on_episode_end), plugin("crasher", on_run_end=bad_on_run_end))
    plugins.call_observers("on_episode_end", episode=1, arm=("vision",), reward=0.25, probe_loss=1.0, state={})
    plugins.call_observers("on_run_end", out_dir="/tmp/x", report={})
    assert seen == [0.25]
    err = capsys.readouterr().err
    assert "plugin 'crasher' failed in on_run_end: ValueError: disk full" in err


def test_pluggy_project_name() -> None:
    assert isinstance(hookspecs.hookimpl, pluggy.HookimplMarker)
    assert plugins.load_plugins(include_entry_points=False).pm.project_name == "distillctl"
