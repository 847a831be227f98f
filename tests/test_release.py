"""Release 0.2.0: the version everywhere, the plugin API version and its refusals, the CHANGELOG's breaking
section, and burn-in that cannot swallow a run in any bundled preset."""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import distillctl
from distillctl import plugins
from distillctl.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_0_2_0_everywhere() -> None:
    assert distillctl.__version__ == "0.2.0"
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == "distillctl 0.2.0"
    assert md.version("distillctl") == "0.2.0"  # the installed metadata comes from the same place
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'path = "distillctl/__init__.py"' in pyproject


def test_console_script_says_0_2_0() -> None:
    out = subprocess.run([sys.executable, "-m", "distillctl", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "distillctl 0.2.0"


def test_guide_pin_includes_the_installed_version() -> None:
    guide = (ROOT / "plugins" / "README.md").read_text()
    pins = re.findall(r"distillctl>=([\d.]+),<([\d.]+)", guide)
    assert pins
    version = tuple(int(x) for x in distillctl.__version__.split("."))
    for low, high in pins:
        lo = tuple(int(x) for x in low.split("."))
        hi = tuple(int(x) for x in high.split("."))
        assert lo <= version < hi, (low, high)


# ----------------------------------------------------------------- CHANGELOG
def _section(text: str, head: str) -> str:
    start = text.index(head)
    nxt = re.search(r"^## \[", text[start + len(head):], flags=re.M)
    return text[start: start + len(head) + (nxt.start() if nxt else len(text))]


def test_changelog_has_the_release_and_a_fresh_unreleased_on_top() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    heads = re.findall(r"^## \[.*$", text, flags=re.M)
    assert heads[:2] == ["## [Unreleased]", "## [0.2.0] - 2026-12-06"]
    unreleased = _section(text, "## [Unreleased]").split("\n- ")[1:]
    released = _section(text, "## [0.2.0] - 2026-12-06")
    assert not [b for b in unreleased if b.strip() and b.strip() in released]  # nothing released is listed twice


@pytest.mark.parametrize(
    ("topic", "migration"),
    [
        ("evaluate(bundle, ctx)", "evaluate(model, tokenizer, transform, dataset"),
        ("`position_mask` moved from the splitter to the family", "Family.position_mask(module, inputs)"),
        ("`loss.caption_weight` moved to `[family]`", "[family]"),
        ("New built-in `clip` splitter", "PLUGIN/clip"),
        ("`Teacher` (`ModelBundle`) takes `family` and `splitter`", 'family="<your family>", splitter="<your splitter>"'),
    ],
)
def test_changelog_breaking_section_lists_each_plugin_api_break_with_its_migration(topic: str, migration: str) -> None:
    release = _section((ROOT / "CHANGELOG.md").read_text(), "## [0.2.0] - 2026-12-06")
    breaking = release[release.index("### Breaking (plugin API)"):]
    breaking = breaking[: breaking.index("\n### ", 1)]
    [bullet] = [b for b in breaking.split("\n- ") if topic in b]
    assert "*Migration:*" in bullet and migration in bullet, bullet


# ----------------------------------------------------------------- PLUGIN_API
def _policies(register: Any) -> None:
    register("api-policy", lambda *, arms, seed: None)


@pytest.mark.parametrize(
    ("declared", "refused"),
    [
        (None, None),
        ("2.0", None),
        ("2", None),
        ("2.1", "requires distillctl plugin API 2.1, this distillctl 0.2.0 provides plugin API 2.0: upgrade distillctl"),
        ("3.0", "requires distillctl plugin API 3.0"),
        ("1.4", "was written for distillctl plugin API 1.4, this distillctl 0.2.0 provides plugin API 2.0"),
        ("two", "DISTILLCTL_PLUGIN_API = 'two' is not a version"),
    ],
)
def test_plugin_api_declaration(plugin: Any, declared: str | None, refused: str | None) -> None:
    assert distillctl.PLUGIN_API == "2.0"
    mod = plugin("api_plugin", distribution="distillctl-api", version="1.0", register_policies=_policies)
    if declared is not None:
        mod.DISTILLCTL_PLUGIN_API = declared
    loaded = plugins.load_plugins(include_entry_points=False, extra=(mod,))
    if refused is None:
        assert loaded.broken == [] and "api-policy" in loaded.registry("policy")
        return
    [broken] = loaded.broken
    assert broken.line().startswith("plugin 'api_plugin' (distillctl-api 1.0) is broken: ")
    assert refused in broken.line() and "\n" not in broken.line()
    assert "api-policy" not in loaded.registry("policy")  # refused: none of its hooks ran


def test_plugin_requiring_a_newer_api_is_one_line_in_plugins(use_plugins: Any, plugin: Any) -> None:
    mod = plugin("future_plugin", distribution="distillctl-future", version="5.0", register_policies=_policies)
    mod.DISTILLCTL_PLUGIN_API = "2.9"
    use_plugins(mod)
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if "future_plugin" in line]
    assert lines == ["plugin 'future_plugin' (distillctl-future 5.0) is broken: requires distillctl plugin API 2.9, "
                     "this distillctl 0.2.0 provides plugin API 2.0: upgrade distillctl (pip install -U distillctl)"]


# ----------------------------------------------------------------- teacher declarations
def test_builtin_teachers_declare_their_family_and_splitter() -> None:
    teachers = plugins.get_plugins().registry("teacher")
    for name in ("quickstart", "coca-base", "coca-large", "clip-tiny"):
        factory = teachers.get(name).factory
        assert factory.family in plugins.get_plugins().registry("family"), name
        assert factory.splitter in plugins.get_plugins().registry("splitter"), name


def test_check_triple_catches_a_wrong_family_declaration(use_plugins: Any, plugin: Any) -> None:
    from distillctl import testing
    from distillctl.default_plugins.teachers import quickstart

    def lying(weights: str | None = None, device: str = "cpu") -> Any:
        """quickstart, declared as a clip teacher."""
        return quickstart(weights=weights, device=device)

    lying.family = "clip"  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="declares family = 'clip' but its bundle names 'coca'"):
        testing.check_triple(lying, "layer-subset", "coca")


# ----------------------------------------------------------------- burn-in
def _burn_ins(cfg: dict[str, Any], uses_rewards: bool = True) -> list[bool]:
    from distillctl.engine import burn_in_arm
    from distillctl.policies import build_arms

    ctx = SimpleNamespace(cfg=cfg, train=cfg["train"], policy=SimpleNamespace(uses_rewards=uses_rewards),
                          arms=build_arms(["vision", "text", "multimodal"], cfg["policy"]["arms"]))
    return [burn_in_arm(ctx, e) is not None for e in range(cfg["train"]["episodes"])]  # type: ignore[arg-type]


def test_every_bundled_preset_lets_a_learning_policy_decide() -> None:
    from distillctl import config, presets

    for info in presets.list_presets():
        cfg = config.validate(presets.load_preset(info.name), check_components=False)
        burn = _burn_ins(cfg)
        assert not all(burn), f"{info.name}: every episode is burn-in"
        assert sum(burn) <= len(burn) // 2, info.name
    smoke = config.validate(presets.load_preset("smoke"), check_components=False)
    assert _burn_ins(smoke) == [False, False, False]  # the smoke run exercises the policy in every episode


@pytest.mark.parametrize(("episodes", "expected"), [(1, [False]), (3, [True, False, False]), (4, [True, True, False, False])])
def test_burn_in_never_takes_more_than_half_the_run(episodes: int, expected: list[bool]) -> None:
    from distillctl import config

    cfg = config.validate({"teacher": {"name": "quickstart"},
                           "train": {"episodes": episodes, "episode_steps": 2, "warmup_steps": 1000}},
                          check_components=False)
    assert _burn_ins(cfg) == expected
    assert _burn_ins(cfg, uses_rewards=False) == [False] * episodes  # fixed-order, uniform: never a burn-in
