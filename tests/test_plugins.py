"""Plugin loading: built-ins through the same hooks, broken plugins reported, blocking, clashes."""

from __future__ import annotations

import importlib.metadata as md
import inspect
import json
import types
from typing import Any

import pluggy
import pytest
from typer.testing import CliRunner

from distillctl import hookspecs, plugins
from distillctl.cli import app
from distillctl.errors import ComponentClashError, PluginError


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


def _guide_hook_rows() -> dict[str, tuple[list[str], list[str]]]:
    """The hook tables of plugins/README.md section 2: hook name -> (its documented arguments, the other cells)."""
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "plugins" / "README.md").read_text()
    section = guide[guide.index("## 2. The hooks"): guide.index("## 3. The contracts")]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`(\w+)\(([^)]*)\)`\s*\|(.*)\|\s*$", line)
        if m:
            args = [a.strip() for a in m.group(2).split(",") if a.strip()]
            rows[m.group(1)] = (args, [c.strip() for c in m.group(3).split("|")])
    return rows


def test_every_hookspec_is_documented_in_the_guide() -> None:
    """Every hook has a row in the guide's hook tables, with the hookspec's own arguments and every cell
    filled in, and the tables document no hook that does not exist (datasette's docs meta-test)."""
    specs = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "distillctl_spec")}
    assert set(plugins.KINDS) <= set(specs)
    rows = _guide_hook_rows()
    assert set(rows) == set(specs), (sorted(set(specs) - set(rows)), sorted(set(rows) - set(specs)))
    for name, (args, cells) in rows.items():
        assert args == list(inspect.signature(specs[name]).parameters), (name, args)
        assert cells and all(cells), f"{name}: an empty cell in the guide's hook table"
        assert (inspect.getdoc(specs[name]) or "").strip(), f"hookspec {name} has no docstring"


def test_hook_that_raises_is_reported_and_others_still_register(plugin: Any) -> None:
    bad = plugin("bad_plugin", distribution="distillctl-bad", register_policies=_raises)
    good = plugin("good_plugin", distribution="distillctl-good", version="1.2", register_policies=_registers_greedy)
    loaded = plugins.load_plugins(include_entry_points=False, extra=(bad, good))
    assert len(loaded.broken) == 1
    line = loaded.broken[0].line()
    assert line == "plugin 'bad_plugin' (distillctl-bad 0.0.1) is broken: RuntimeError: boom: cannot find my weights"
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


def test_duplicate_across_plugins_is_recorded_not_fatal(plugin: Any) -> None:
    a = plugin("plugin_a", distribution="distillctl-a", version="1.0", register_policies=_registers_greedy)
    b = plugin("plugin_b", distribution="distillctl-b", version="2.0", register_policies=_registers_greedy)
    loaded = plugins.load_plugins(include_entry_points=False, extra=(a, b))  # no longer raises
    assert loaded.broken == []
    [clash] = loaded.clashes()  # one clash: the name and its alias, claimed by the same two plugins
    assert clash.kind == "policy" and clash.names == ("greedy", "g")
    assert [p.plugin for p in clash.plugins()] == ["plugin_a", "plugin_b"]
    policies = loaded.registry("policy")
    assert [e.provenance.plugin for e in policies if e.name == "greedy"] == ["plugin_a", "plugin_b"]  # both listed
    assert policies.get("optima").provenance.distribution == "distillctl"  # every other name keeps working
    for asked in ("greedy", "g"):
        with pytest.raises(ComponentClashError) as info:
            policies.get(asked)
        msg = str(info.value)
        assert msg.startswith(f"cannot use policy {asked!r}: duplicate policy names 'greedy', 'g': ")
        # the first plugin to register is named first; the exact value that resolves it follows
        assert "registered by plugin_a (distillctl-a 1.0) and by plugin_b (distillctl-b 2.0)." in msg
        assert msg.endswith(
            "Set DISTILLCTL_DISABLE_PLUGINS=plugin_b to keep plugin_a's, or DISTILLCTL_DISABLE_PLUGINS=plugin_a to keep plugin_b's."
        )
        assert "\n" not in msg


def test_clash_hint_is_the_exact_value_and_it_resolves(plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a = plugin("plugin_a", distribution="distillctl-a", version="1.0", register_policies=_registers_greedy)
    b = plugin("plugin_b", distribution="distillctl-b", version="2.0", register_policies=_registers_greedy)
    monkeypatch.setenv("DISTILLCTL_DISABLE_PLUGINS", "something_else")  # what is already blocked stays blocked
    loaded = plugins.load_plugins(include_entry_points=False, extra=(a, b))
    [clash] = loaded.clashes()
    value, kept = clash.fixes()[0]
    assert value == "DISTILLCTL_DISABLE_PLUGINS=something_else,plugin_b" and kept.plugin == "plugin_a"

    monkeypatch.setenv(*value.split("=", 1))  # do what the message says
    loaded = plugins.load_plugins(include_entry_points=False, extra=(a, b))
    assert loaded.clashes() == []
    assert loaded.registry("policy").get("greedy").provenance.plugin == "plugin_a"


def test_a_builtin_name_is_never_taken_over(plugin: Any) -> None:
    def registers_uniform(register: Any) -> None:
        register("uniform", fake_policy, aliases=("random", "rnd"))

    c = plugin("plugin_c", distribution="distillctl-c", version="3.0", register_policies=registers_uniform)
    loaded = plugins.load_plugins(include_entry_points=False, extra=(c,))
    policies = loaded.registry("policy")
    # the built-in keeps its name and alias, for everyone, without blocking anything
    assert policies.get("uniform").provenance.distribution == "distillctl"
    assert policies.get("random").provenance.distribution == "distillctl"
    assert loaded.clashes() == []
    # the plugin's component is shadowed, usable under PLUGIN/NAME, and keeps the alias nobody else has
    ours = policies.get("plugin_c/uniform")
    assert ours.provenance.distribution == "distillctl-c" and ours.factory is fake_policy
    assert policies.get("rnd") is ours
    assert policies.create("plugin_c/uniform", arms=[("a",)], seed=0) == ("policy", 8)
    [shadow] = loaded.shadowed()
    assert shadow.alias == "plugin_c/uniform" and shadow.names == ("uniform", "random")
    assert shadow.line() == (
        "policy names 'uniform', 'random' of plugin plugin_c (distillctl-c 3.0) are shadowed by the built-in policy "
        "'uniform', which keeps working. Use the plugin's as 'plugin_c/uniform' (or ask its author to rename it).")


def test_plugins_command_reports_a_shadowed_component(plugin: Any, use_plugins: Any) -> None:
    def old_splitter() -> str:
        """A 0.1 plugin's splitter called clip."""
        return "splitter"

    def registers_clip(register: Any) -> None:
        register("clip", old_splitter)

    use_plugins(plugin("old_clip", distribution="distillctl-old-clip", version="0.9", register_splitters=registers_clip))
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0
    assert "shadowed: splitter name 'clip' of plugin old_clip (distillctl-old-clip 0.9) is shadowed by the built-in " \
           "splitter 'clip', which keeps working. Use the plugin's as 'old_clip/clip'" in result.stdout
    doc = json.loads(CliRunner().invoke(app, ["plugins", "--json"]).stdout)
    assert doc["clashes"] == []
    [shadow] = doc["shadowed"]
    assert shadow["use_as"] == "old_clip/clip" and shadow["distribution"] == "distillctl-old-clip"
    [ours] = [c for c in doc["components"] if c["distribution"] == "distillctl-old-clip"]
    assert ours["shadowed"] and ours["use_as"] == "old_clip/clip"
    # the shadowed component is usable by its alias, the built-in by its name
    from distillctl import config

    cfg = config.validate({"teacher": {"name": "quickstart"}, "splitter": {"name": "old_clip/clip"}})
    assert cfg["splitter"]["name"] == "old_clip/clip"


def test_plugin_registering_one_name_twice_is_a_clash_too(plugin: Any) -> None:
    def twice(register: Any) -> None:
        register("greedy", fake_policy)
        register("greedy", fake_policy)

    loaded = plugins.load_plugins(include_entry_points=False, extra=(plugin("sloppy", distribution="distillctl-sloppy", register_policies=twice),))
    with pytest.raises(ComponentClashError, match=r"registered twice by sloppy \(distillctl-sloppy 0.0.1\)\. "
                       r"Set DISTILLCTL_DISABLE_PLUGINS=sloppy to drop it and report the bug to distillctl-sloppy\."):
        loaded.registry("policy").get("greedy")


def test_two_distributions_with_one_entry_point_name_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_ep(dist: str, version: str, register_policies: Any) -> Any:
        mod = types.ModuleType(f"{dist}_plugin")
        mod.register_policies = hookspecs.hookimpl(register_policies)  # type: ignore[attr-defined]
        return types.SimpleNamespace(name="greedy", dist=types.SimpleNamespace(name=dist, version=version), load=lambda: mod)

    eps = [fake_ep("distillctl-a", "1.0", _registers_greedy), fake_ep("distillctl-b", "2.0", _registers_greedy)]
    monkeypatch.setattr(md, "entry_points", lambda group: eps if group == plugins.ENTRY_POINT_GROUP else [])
    loaded = plugins.load_plugins()
    assert loaded.registry("policy").get("greedy").provenance.distribution == "distillctl-a"
    assert [b.line() for b in loaded.broken] == [
        "plugin 'greedy' (distillctl-b 2.0) is broken: not loaded: its entry-point name 'greedy' is taken by "
        "distillctl-a 1.0 (set DISTILLCTL_DISABLE_PLUGINS=distillctl-a to load this one instead)"
    ]


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
    assert err == "warning: plugin 'crasher' (crasher 0.0.1) failed in on_run_end: ValueError: disk full; the run goes on.\n"


def test_observer_traceback_with_debug(use_plugins: Any, plugin: Any, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_on_run_end(out_dir: str) -> None:
        raise ValueError("disk full")

    use_plugins(plugin("crasher", on_run_end=bad_on_run_end))
    monkeypatch.setenv("DISTILLCTL_DEBUG", "1")
    plugins.call_observers("on_run_end", out_dir="/tmp/x", report={})
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "bad_on_run_end" in err
    assert err.endswith("warning: plugin 'crasher' (crasher 0.0.1) failed in on_run_end: ValueError: disk full; the run goes on.\n")


def test_pluggy_project_name() -> None:
    assert isinstance(hookspecs.hookimpl, pluggy.HookimplMarker)
    assert plugins.load_plugins(include_entry_points=False).pm.project_name == "distillctl"


# ----------------------------------------------------------------------------- through the CLI
def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _clashing_pair(plugin: Any) -> tuple[Any, Any]:
    a = plugin("plugin_a", distribution="distillctl-a", version="1.0", register_policies=_registers_greedy)
    b = plugin("plugin_b", distribution="distillctl-b", version="2.0", register_policies=_registers_greedy)
    return a, b


CLASH_LINE = (
    "duplicate policy names 'greedy', 'g': registered by plugin_a (distillctl-a 1.0) and by plugin_b (distillctl-b 2.0). "
    "Set DISTILLCTL_DISABLE_PLUGINS=plugin_b to keep plugin_a's, or DISTILLCTL_DISABLE_PLUGINS=plugin_a to keep plugin_b's."
)


def test_cli_plugins_lists_both_sides_of_a_clash(use_plugins: Any, plugin: Any) -> None:
    use_plugins(*_clashing_pair(plugin), lazy=True)
    result = _cli("plugins")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if " greedy (clash) " in line]
    assert len(rows) == 2 and "distillctl-a 1.0" in rows[0] and "distillctl-b 2.0" in rows[1]
    assert any(" optima " in line for line in result.stdout.splitlines())  # everything else still listed
    assert f"clash: {CLASH_LINE}" in result.stdout.splitlines()

    doc = json.loads(_cli("plugins", "--json").stdout)
    greedy = [c for c in doc["components"] if c["name"] == "greedy"]
    assert [(c["distribution"], c["clash"]) for c in greedy] == [("distillctl-a", True), ("distillctl-b", True)]
    assert not any(c["clash"] for c in doc["components"] if c["name"] != "greedy")
    assert doc["clashes"] == [
        {
            "kind": "policy",
            "names": ["greedy", "g"],
            "plugins": [
                {"plugin": "plugin_a", "distribution": "distillctl-a", "version": "1.0"},
                {"plugin": "plugin_b", "distribution": "distillctl-b", "version": "2.0"},
            ],
            "fixes": ["DISTILLCTL_DISABLE_PLUGINS=plugin_b", "DISTILLCTL_DISABLE_PLUGINS=plugin_a"],
            "message": CLASH_LINE,
        }
    ]


def test_cli_commands_needing_the_clashing_name_refuse_others_work(use_plugins: Any, plugin: Any) -> None:
    use_plugins(*_clashing_pair(plugin), lazy=True)
    refused = _cli("simulate", "--policies", "greedy", "--episodes", "5", "--seeds", "1")
    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == [f"error: cannot use policy 'greedy': {CLASH_LINE}"]

    invalid = _cli("presets", "validate", "smoke", "--set", "policy.name=g")
    assert invalid.exit_code == 1
    assert f"  policy.name: cannot use policy 'g': {CLASH_LINE}" in invalid.stderr.splitlines()

    assert _cli("simulate", "--policies", "optima", "--episodes", "5", "--seeds", "1").exit_code == 0
    assert _cli("presets", "validate", "smoke").exit_code == 0


def _boom_teacher(*, weights: str | None = None, device: str = "cpu", width: int = 64) -> Any:
    """A teacher whose factory has a bug."""
    raise ValueError("bad width")


def test_cli_factory_exception_is_one_line_naming_the_plugin(use_plugins: Any, plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def register_teachers(register: Any) -> None:
        register("boom", _boom_teacher)

    use_plugins(plugin("boomer", distribution="my-dist", version="1.2.0", register_teachers=register_teachers))
    result = _cli("inspect", "--teacher", "boom")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: teacher 'boom' from plugin my-dist 1.2.0 failed: ValueError: bad width (DISTILLCTL_DEBUG=1 shows the traceback.)"
    ]
    assert "Traceback" not in result.output

    monkeypatch.setenv("DISTILLCTL_DEBUG", "1")
    debug = _cli("inspect", "--teacher", "boom")
    assert isinstance(debug.exception, PluginError)
    assert isinstance(debug.exception.__cause__, ValueError)  # the plugin's own traceback is kept
