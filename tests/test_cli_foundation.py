"""The CLI foundation driven through the real Typer app: --version/--help, plugins, presets, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from distillctl import __version__, config, plugins, presets
from distillctl.cli import app

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli() -> Any:
    runner = CliRunner()

    def invoke(*args: str, **kwargs: Any) -> Any:
        return runner.invoke(app, list(args), **kwargs)

    return invoke


def _greedy(*, arms: list, seed: int, window: int = 4) -> str:
    """Always the best arm so far."""
    return "greedy"


def _register_greedy(register: Any) -> None:
    register("greedy", _greedy, aliases=("g",))


def _raises(register: Any) -> None:
    raise RuntimeError("boom: cannot find my weights")


def _stderr_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- root
def test_version(cli: Any) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"distillctl {__version__}\n"


def test_help_lists_command_groups(cli: Any) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for word in ("plugins", "presets", "--version", "DISTILLCTL_DEBUG"):
        assert word in result.stdout


def test_fast_root_help_is_the_apps_help() -> None:
    """``distillctl`` / ``--help`` / ``--version`` are answered without Typer (distillctl.roothelp): its table must
    list exactly the app's commands, in the app's panels and order, with their one-line helps."""
    import typer.main

    from distillctl import roothelp

    group = typer.main.get_command(app)
    listed = []
    for name in group.list_commands(None):  # type: ignore[arg-type]
        cmd = group.commands[name]
        first = (cmd.help or "").strip().split("\n\n")[0].replace("\n", " ")
        listed.append((getattr(cmd, "rich_help_panel", None) or "Commands", name, first))
    panels = list(dict.fromkeys(["Commands", *(p for p, _, _ in listed)]))  # rich: the default panel first
    ordered = [row for panel in panels for row in listed if row[0] == panel]  # rich groups the commands by panel
    assert list(roothelp.COMMANDS) == ordered
    text = roothelp.render(100)
    assert all(name in text for _, name, _ in roothelp.COMMANDS) and "DISTILLCTL_DEBUG=1" in text
    assert all(len(line) <= 100 for line in text.splitlines())
    for args in ([], ["--help"], ["-h"]):
        proc = subprocess.run([sys.executable, "-c", "import sys; from distillctl.roothelp import main; main(); "
                               "print(sorted(m for m in ('typer', 'rich', 'pluggy', 'torch') if m in sys.modules))", *args],
                              capture_output=True, text=True, env=_env(), timeout=60)
        assert proc.returncode == 0 and "Usage: distillctl" in proc.stdout, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == "[]"  # nothing heavy imported


def test_click_usage_errors_keep_exit_2(cli: Any) -> None:
    assert cli("presets", "validate").exit_code == 2  # missing argument
    assert cli("plugins", "--bogus").exit_code == 2
    assert cli("no-such-command").exit_code == 2


def test_debug_env_reraises_with_traceback(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLCTL_DEBUG", "1")
    result = cli("presets", "show", "nosuch")
    assert isinstance(result.exception, presets.UnknownPresetError)
    assert "error:" not in result.output


# ----------------------------------------------------------------------------- plugins
def test_plugins_table_shows_provenance(cli: Any, use_plugins: Any, plugin: Any) -> None:
    use_plugins(plugin("greedy_plugin", distribution="distillctl-policy-greedy", version="0.3.1", register_policies=_register_greedy))
    result = cli("plugins")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if " greedy " in line)
    for cell in ("policy", "greedy", " g ", "distillctl-policy-greedy 0.3.1", "Always the best arm so far."):
        assert cell in row


def test_plugins_json(cli: Any, use_plugins: Any, plugin: Any) -> None:
    use_plugins(
        plugin("greedy_plugin", distribution="distillctl-policy-greedy", version="0.3.1", register_policies=_register_greedy),
        builtins=False,
    )
    result = cli("plugins", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc == {
        "components": [
            {
                "kind": "policy",
                "name": "greedy",
                "aliases": ["g"],
                "prefix": False,
                "summary": "Always the best arm so far.",
                "plugin": "greedy_plugin",
                "distribution": "distillctl-policy-greedy",
                "version": "0.3.1",
                "clash": False,
                "shadowed": False,
                "use_as": "greedy",
            }
        ],
        "clashes": [],
        "shadowed": [],
        "broken": [],
    }


def test_plugins_lists_broken_plugin_and_keeps_the_rest(cli: Any, use_plugins: Any, plugin: Any) -> None:
    use_plugins(
        plugin("bad_plugin", distribution="distillctl-bad", register_policies=_raises),
        plugin("greedy_plugin", register_policies=_register_greedy),
    )
    result = cli("plugins")
    assert result.exit_code == 0  # a diagnostic command: broken plugins are listed, not fatal
    assert "greedy" in result.stdout
    assert "plugin 'bad_plugin' (distillctl-bad 0.0.1) is broken: RuntimeError: boom: cannot find my weights" in result.stdout

    doc = json.loads(cli("plugins", "--json").stdout)
    assert doc["broken"] == [
        {
            "plugin": "bad_plugin",
            "distribution": "distillctl-bad",
            "version": "0.0.1",
            "error": "RuntimeError: boom: cannot find my weights",
        }
    ]
    assert [c["name"] for c in doc["components"] if c["kind"] == "policy" and c["plugin"] == "greedy_plugin"] == ["greedy"]


def test_plugins_duplicate_is_listed_not_fatal(cli: Any, use_plugins: Any, plugin: Any) -> None:
    a = plugin("plugin_a", distribution="distillctl-a", version="1.0", register_policies=_register_greedy)
    b = plugin("plugin_b", distribution="distillctl-b", version="2.0", register_policies=_register_greedy)
    use_plugins(a, b, lazy=True)
    result = cli("plugins")
    assert result.exit_code == 0, result.output  # a clash no longer takes down every command (more in test_plugins.py)
    clash = [line for line in result.stdout.splitlines() if line.startswith("clash: ")]
    assert len(clash) == 1  # one line for the name and its alias 'g'
    assert clash[0].startswith("clash: duplicate policy names 'greedy', 'g': registered by plugin_a (distillctl-a 1.0)")
    assert "plugin_b (distillctl-b 2.0)" in clash[0] and "DISTILLCTL_DISABLE_PLUGINS=plugin_b" in clash[0]


def test_plugins_blocked_by_env(cli: Any, use_plugins: Any, plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a = plugin("plugin_a", distribution="distillctl-a", version="1.0", register_policies=_register_greedy)
    b = plugin("plugin_b", distribution="distillctl-b", version="2.0", register_policies=_register_greedy)
    monkeypatch.setenv("DISTILLCTL_DISABLE_PLUGINS", "distillctl-b")  # resolves the duplicate, as the hint says
    use_plugins(a, b, lazy=True)
    result = cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    greedy = [c for c in json.loads(result.stdout)["components"] if c["name"] == "greedy"]
    assert [c["distribution"] for c in greedy] == ["distillctl-a"]


# ----------------------------------------------------------------------------- presets
def test_presets_list(cli: Any) -> None:
    result = cli("presets", "list")
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if " smoke " in line)
    assert "Tiny CI smoke run" in row and "distillctl distill --preset smoke --out runs/smoke" in row
    doc = json.loads(cli("presets", "list", "--json").stdout)
    smoke = next(p for p in doc["presets"] if p["name"] == "smoke")
    assert smoke["command"] == "distillctl distill --preset smoke --out runs/smoke"
    assert Path(smoke["path"]).name == "smoke.toml"


def test_presets_show_prints_the_file_with_header(cli: Any, tmp_path: Path) -> None:
    result = cli("presets", "show", "smoke")
    assert result.exit_code == 0
    assert result.stdout == (REPO / "presets" / "smoke.toml").read_text()
    assert result.stdout.startswith("# Tiny CI smoke run")

    own = tmp_path / "mine.toml"
    own.write_text("# mine\n[train]\nepisodes = 1\n")
    assert cli("presets", "show", str(own)).stdout == own.read_text()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("nosuch", "error: unknown preset 'nosuch'. Bundled presets: {names}."),  # nothing close: no noise
        ("smok", "error: unknown preset 'smok'. Did you mean 'smoke'? Bundled presets: {names}."),
        ("missing/smoke.toml", "error: preset file missing/smoke.toml not found (did you mean the bundled preset 'smoke'?)."),
    ],
)
def test_presets_show_unknown(cli: Any, given: str, expected: str) -> None:
    result = cli("presets", "show", given)
    assert result.exit_code == 1
    lines = _stderr_lines(result)
    names = ", ".join(p.name for p in presets.list_presets())
    assert len(lines) == 1 and lines[0].startswith(expected.format(names=names)), lines


FAKE_PRESET = """\
# A preset naming only the throw-away smoke_components (tests/conftest.py).
# run: distillctl distill --preset fake.toml

[teacher]
name = "quickstart"

[student]
name = "layer-subset"
keep = 1

[policy]
name = "optima"

[data]
name = "shapes"

[train]
episodes = 2
"""


@pytest.fixture
def fake_preset(tmp_path: Path, use_plugins: Any, smoke_components: Any) -> Path:
    """A valid preset file for the throw-away components (built-ins left out)."""
    use_plugins(smoke_components, builtins=False)
    path = tmp_path / "fake.toml"
    path.write_text(FAKE_PRESET)
    return path


def test_presets_validate_ok(cli: Any, fake_preset: Path) -> None:
    result = cli("presets", "validate", str(fake_preset))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok: {fake_preset} is valid"
    result = cli("presets", "validate", str(fake_preset), "--set", "train.episodes=6", "-s", "policy.window=3")
    assert result.exit_code == 0, result.output


def test_presets_validate_reports_all_problems_at_once(cli: Any, fake_preset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "# broken on purpose\n"
        '[teacher]\nname = "quickstart"\n'
        '[student]\nname = 7\n'  # not a name
        '[policy]\nname = "optima"\n'
        '[data]\nname = "shapes"\n'
        '[train]\nbogus = 1\nlr = "fast"\n'
    )
    result = cli("presets", "validate", str(bad))
    assert result.exit_code == 1
    lines = _stderr_lines(result)
    assert lines[0] == f"error: {bad}: invalid config (3 problems):"
    body = [line.strip() for line in lines[1:]]
    assert len(body) == 3
    assert any(line.startswith("train.bogus: unknown key") for line in body)
    assert any(line.startswith("train.lr: expected number, got str 'fast'") for line in body)
    assert any(line.startswith("student.name: expected string") for line in body)


def test_presets_validate_unknown_component_suggests(cli: Any, fake_preset: Path) -> None:
    result = cli("presets", "validate", str(fake_preset), "--set", "policy.name=optma")
    assert result.exit_code == 1
    lines = _stderr_lines(result)
    assert lines == [
        f"error: {fake_preset}: invalid config (1 problem):",
        "  policy.name: unknown policy 'optma'. Did you mean 'optima'? Valid policy names: optima.",
    ]


def test_presets_validate_overrides_are_checked(cli: Any, fake_preset: Path) -> None:
    result = cli("presets", "validate", str(fake_preset), "--set", "train.episodes=0", "--set", "policy.windw=3")
    assert result.exit_code == 1
    assert _stderr_lines(result)[1:] == [
        "  policy.windw: unknown option for policy 'optima' (valid: window)",
        "  train.episodes: must be at least 1, got 0",
    ]

    result = cli("presets", "validate", "smoke", "--set", "nonsense")
    assert result.exit_code == 1
    assert _stderr_lines(result) == [
        "error: smoke: invalid config (1 problem):",
        "  --set 'nonsense': expected section.key=value",
    ]


def test_presets_validate_bad_toml(cli: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    result = cli("presets", "validate", str(bad))
    assert result.exit_code == 1
    assert f"{bad}: invalid config" in result.stderr and "not valid TOML" in result.stderr


# ----------------------------------------------------------------------------- bundled presets
BUNDLED = presets.list_presets()


def test_there_are_bundled_presets() -> None:
    assert "smoke" in [p.name for p in BUNDLED]
    root = presets.presets_dir()  # <repo>/presets (checkout, editable) or distillctl/_presets (wheel)
    assert root is not None and root.name in {"presets", "_presets"} and (root / "smoke.toml").is_file()


@pytest.mark.parametrize("info", BUNDLED, ids=[p.name for p in BUNDLED])
def test_bundled_preset_header_and_schema(info: presets.PresetInfo) -> None:
    assert info.summary, f"{info.path} needs a '# <summary>' first line"
    assert info.command.startswith("distillctl "), f"{info.path} needs a '# run: distillctl ...' line"
    assert f"--preset {info.name}" in info.command
    assert presets.find_preset(info.name) == info.path
    assert presets.find_preset(str(info.path)) == info.path
    config.validate(presets.load_preset(info.name), source=info.name, check_components=False)


@pytest.mark.parametrize("info", BUNDLED, ids=[p.name for p in BUNDLED])
def test_bundled_preset_validates_against_builtins(info: presets.PresetInfo) -> None:
    raw = presets.load_preset(info.name)
    loaded = plugins.get_plugins()  # built-ins only (conftest)
    missing = [
        f"{section}.name={raw[section]['name']!r}"
        for section, kind in config.COMPONENT_SECTIONS.items()
        if isinstance(raw.get(section, {}).get("name"), str)
        and not (section == "splitter" and raw[section]["name"] == "auto")
        and raw[section]["name"] not in loaded.registry(kind)
    ]
    assert not missing, f"{info.name} names components no built-in registers: {', '.join(missing)}"
    result = CliRunner().invoke(app, ["presets", "validate", info.name])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok: {info.name} is valid"


def test_preset_header_parsing(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("#   Summary here  \n#\n# run:  distillctl distill --preset x\n# more\n[train]\n# run: not this\n")
    assert presets.preset_header(p) == ("Summary here", "distillctl distill --preset x")
    p.write_text("[train]\nepisodes = 1\n")
    assert presets.preset_header(p) == ("", "")


# ----------------------------------------------------------------------------- start-up cost
HEAVY = ("torch", "open_clip", "timm", "safetensors", "wandb", "mlflow", "tensorboard", "huggingface_hub")

_PROBE = """
import json, sys
from typer.testing import CliRunner
from distillctl.cli import app
runner = CliRunner()
codes = {}
for args in (["--help"], ["--version"], ["plugins"], ["plugins", "--json"], ["presets", "list"],
             ["presets", "show", "smoke"], ["presets", "validate", "smoke"], ["export", "--help"], ["push", "--help"],
             ["presets", "validate", "smoke", "--set", "train.report_to=tensorboard,wandb,mlflow"]):
    codes[" ".join(args)] = runner.invoke(app, args).exit_code
print(json.dumps({"codes": codes, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLCTL_")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_light_commands_do_not_import_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{_PROBE}"], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["heavy"] == [], f"imported at start-up: {doc['heavy']} (import them inside factories / command bodies)"
    for args in ("--help", "--version", "plugins", "plugins --json", "presets list", "presets show smoke", "export --help",
                 "push --help", "presets validate smoke --set train.report_to=tensorboard,wandb,mlflow"):
        assert doc["codes"][args] == 0, (args, doc["codes"])


def test_python_m_entry_point_and_error_boundary() -> None:
    ok = subprocess.run([sys.executable, "-m", "distillctl", "--version"], capture_output=True, text=True, env=_env(), timeout=60)
    assert (ok.returncode, ok.stdout) == (0, f"distillctl {__version__}\n")
    bad = subprocess.run(
        [sys.executable, "-m", "distillctl", "presets", "show", "smok"], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert bad.returncode == 1
    assert bad.stdout == ""
    names = ", ".join(p.name for p in presets.list_presets())
    assert bad.stderr.splitlines() == [f"error: unknown preset 'smok'. Did you mean 'smoke'? Bundled presets: {names}."]
    assert "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- repo consistency
def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    line = next(x for x in ci.splitlines() if x.startswith("TEST_COMMAND="))
    command = line.split("=", 1)[1].strip().strip('"')
    assert command.endswith("pytest") and "pip install -e '.[test]'" in command
    assert f"\n{command}\n" in readme, "README's Quickstart test command must be what .ci/run runs"
    assert os.access(REPO / ".ci" / "run", os.X_OK)
