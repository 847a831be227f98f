"""The run config: defaults, every problem at once, --set overrides, component options, TOML out."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal

import pytest

from distillctl import config
from distillctl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NAMES = {"teacher": {"name": "t"}, "student": {"name": "s"}, "policy": {"name": "p"}, "data": {"name": "d"}}


def test_defaults_fill_in_when_names_given() -> None:
    cfg = config.validate(NAMES, check_components=False)
    assert cfg["train"]["episodes"] == 20 and cfg["policy"]["arms"] == "single"
    assert cfg["splitter"]["name"] == "auto" and cfg["teacher"]["name"] == "t"
    assert cfg["eval"]["evaluators"] is None  # unset: the family's default evaluators
    assert cfg["family"]["name"] == "auto"


def test_every_problem_reported_at_once() -> None:
    raw = {
        "teacher": {"weights": "w.safetensors"},
        "policy": {"name": "p", "arms": "pairs"},
        "data": {"name": 3},
        "train": {"lr": "fast", "bogus": 1, "episodes": True, "batch_size": 0},
        "trainer": {"x": 1},
    }
    with pytest.raises(ConfigError) as info:
        config.validate(raw, source="my.toml", check_components=False)
    problems = info.value.problems
    expected_prefixes = [
        "trainer: unknown section",
        "teacher.name: required value missing",
        "policy.arms: expected one of single, combinations, all, got 'pairs'",
        "data.name: expected string",
        "train.lr: expected number",
        "train.bogus: unknown key",
        "train.episodes: expected integer, got True",
        "train.batch_size: must be at least 1, got 0",
    ]
    for prefix in expected_prefixes:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert len(problems) == len(expected_prefixes)
    assert info.value.source == "my.toml"
    assert str(info.value).startswith("my.toml: invalid config: ")


def test_int_is_accepted_where_float_is_expected() -> None:
    cfg = config.validate({**NAMES, "train": {"lr": 1}}, check_components=False)
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)


def test_parse_value_toml_literals_else_string() -> None:
    assert config.parse_value("3") == 3
    assert config.parse_value("1e-4") == pytest.approx(1e-4)
    assert config.parse_value("true") is True
    assert config.parse_value('["retrieval", "fidelity"]') == ["retrieval", "fidelity"]
    assert config.parse_value("coca-base") == "coca-base"  # bare words stay strings


def test_apply_overrides_sets_nested_values_without_touching_input() -> None:
    base = {"train": {"lr": 0.1}}
    out = config.apply_overrides(base, ["train.lr=0.01", "policy.name=optima", "eval.evaluators=['fidelity']"])
    assert out == {"train": {"lr": 0.01}, "policy": {"name": "optima"}, "eval": {"evaluators": ["fidelity"]}}
    assert base == {"train": {"lr": 0.1}}


def test_apply_overrides_reports_all_syntax_errors() -> None:
    with pytest.raises(ConfigError) as info:
        config.apply_overrides({}, ["episodes=3", "train.lr", "train..lr=1"])
    assert len(info.value.problems) == 3
    assert all(p.startswith("--set ") for p in info.value.problems)


def _component_plugin(plugin: Any) -> Any:
    def optima(*, arms: list, seed: int, window: int = 8, sigma: float = 0.1) -> str:
        """Fake OPTIMA."""
        return "optima"

    def anything(**kwargs: Any) -> str:
        return "anything"

    def register_policies(register: Any) -> None:
        register("optima", optima)
        register("free", anything)

    def named(kind: str) -> Any:
        def register_hook(register: Any) -> None:
            register(NAMES[kind]["name"], anything)

        return register_hook

    return plugin(
        "cfg_components",
        register_policies=register_policies,
        register_teachers=named("teacher"),
        register_students=named("student"),
        register_datasets=named("data"),
    )


def test_component_options_checked_against_factory(use_plugins: Any, plugin: Any) -> None:
    use_plugins(_component_plugin(plugin), builtins=False)
    ok = config.validate({**NAMES, "policy": {"name": "optima", "window": 4}}, check_components=True)
    assert ok["policy"]["window"] == 4

    bad = {**NAMES, "policy": {"name": "optima", "windw": 4, "seed": 3}}
    with pytest.raises(ConfigError) as info:
        config.validate(bad, check_components=True)
    policy_problems = [p for p in info.value.problems if p.startswith("policy.")]
    assert "policy.windw: unknown option for policy 'optima' (valid: sigma, window)" in policy_problems
    assert any(p.startswith("policy.seed: unknown option") for p in policy_problems)  # reserved: set by the tool
    assert all(p.startswith("policy.") for p in info.value.problems), info.value.problems


def test_unknown_component_name_suggests(use_plugins: Any, plugin: Any) -> None:
    use_plugins(_component_plugin(plugin), builtins=False)
    with pytest.raises(ConfigError) as info:
        config.validate({**NAMES, "policy": {"name": "optma"}}, check_components=True)
    assert any("policy.name: unknown policy 'optma'. Did you mean 'optima'?" in p for p in info.value.problems)


def test_kwargs_factory_accepts_any_option(use_plugins: Any, plugin: Any) -> None:
    use_plugins(_component_plugin(plugin), builtins=False)
    cfg = config.validate({**NAMES, "policy": {"name": "free", "whatever": 1}}, check_components=True)
    assert cfg["policy"]["whatever"] == 1


def test_dumps_toml_round_trips() -> None:
    cfg = config.validate({**NAMES, "teacher": {"name": "t", "weights": 'dir "quoted"'}}, check_components=False)
    text = config.dumps_toml(cfg)
    back = tomllib.loads(text)
    expected = {s: {k: v for k, v in t.items() if v is not None} for s, t in cfg.items()}
    assert back == expected
    assert config.validate(back, check_components=False) == cfg


def test_load_toml_errors_name_the_file(tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid config: not valid TOML"):
        config.load_toml(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load_toml(tmp_path / "missing.toml")


def test_a_preset_with_only_a_teacher_validates() -> None:
    cfg = config.validate({"teacher": {"name": "t"}}, check_components=False)
    assert (cfg["student"]["name"], cfg["policy"]["name"], cfg["data"]["name"]) == ("layer-subset", "optima", "shapes")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.lr", -1.0, "must be greater than 0, got -1.0"),
        ("train.lr", 0, "must be greater than 0, got 0"),
        ("train.lr", float("nan"), "must be a finite number, got nan"),
        ("train.lr", float("inf"), "must be a finite number, got inf"),
        ("train.threads", -1, "must be at least 0, got -1"),
        ("train.probe_batch_size", -3, "must be at least 0, got -3"),
        ("train.min_lr_ratio", 1.5, "must be between 0 and 1, got 1.5"),
        ("train.grad_clip", -0.1, "must be at least 0, got -0.1"),
        ("train.seed", -1, "must be between 0 and"),
        ("train.checkpoint_every", -2, "must be at least 0, got -2"),
        ("loss.temperature", 0, "must be greater than 0, got 0"),
        ("loss.w_lw", -1, "must be at least 0, got -1"),
        ("data.workers", -1, "must be at least 0, got -1"),
        ("eval.samples", 0, "must be at least 1, got 0"),
    ],
)
def test_numbers_are_range_checked(key: str, value: float, message: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError) as info:
        config.validate({**NAMES, section: {**NAMES.get(section, {}), name: value}}, check_components=False)
    problems = info.value.problems
    assert len(problems) == 1, problems  # exactly this problem: nothing else about the config is wrong
    assert problems[0].startswith(f"{key}: {message}"), problems


def test_every_range_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        config.validate({**NAMES, "train": {"lr": -1, "threads": -1}, "loss": {"temperature": 0}}, check_components=False)
    assert len(info.value.problems) == 3


def test_load_toml_not_utf8_is_one_problem(tmp_path: Any) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes('# caf\xe9 preset\n[teacher]\nname = "quickstart"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not a UTF-8 text file") as info:
        config.load_toml(p)
    assert len(info.value.problems) == 1


# ----------------------------------------------------------------- option types (factory annotations)
def _typed_policy(*, arms: list, seed: int, window: int = 8, sigma: float | None = None, order: Sequence[str] | None = None,
                  mode: Literal["fast", "slow"] = "fast", warmup: bool = True, opaque: NotImportedHere = None) -> str:  # noqa: F821
    """Fake policy with annotated options."""
    return "typed"


TEACHER = {"teacher": {"name": "quickstart"}}


def _typed_kwargs_policy(*, arms: list, seed: int, window: int = 8, **extra: Any) -> str:
    """Fake policy taking **kwargs."""
    return "typed"


def _typed_plugin(plugin: Any) -> Any:
    def register_policies(register: Any) -> None:
        register("typed", _typed_policy)
        register("typed-kw", _typed_kwargs_policy)

    return plugin("typed_components", register_policies=register_policies)


def test_option_types_checked_every_problem_at_once(use_plugins: Any, plugin: Any) -> None:
    use_plugins(_typed_plugin(plugin))
    ok = {"name": "typed", "window": 4, "sigma": 1, "order": ["vision", "text"], "mode": "slow", "warmup": False, "opaque": [1]}
    assert config.validate({**TEACHER, "policy": ok})["policy"]["window"] == 4  # an int is a fine float; unresolvable types pass

    bad = {"name": "typed", "window": "abc", "sigma": "high", "order": "vision", "mode": "medium", "warmup": 1}
    with pytest.raises(ConfigError) as info:
        config.validate({**TEACHER, "policy": bad, "train": {"lr": "fast"}})
    assert info.value.problems == [
        "policy.window: expected integer, got str 'abc'",
        "policy.sigma: expected number, got str 'high'",
        "policy.order: expected list of strings, got str 'vision'",
        "policy.mode: expected one of 'fast', 'slow', got str 'medium'",
        "policy.warmup: expected boolean, got int 1",
        "train.lr: expected number, got str 'fast'",
    ]


def test_kwargs_factory_still_checks_its_named_options(use_plugins: Any, plugin: Any) -> None:
    use_plugins(_typed_plugin(plugin))
    assert config.validate({**TEACHER, "policy": {"name": "typed-kw", "anything": "x", "window": 2}})["policy"]["anything"] == "x"
    with pytest.raises(ConfigError) as info:
        config.validate({**TEACHER, "policy": {"name": "typed-kw", "window": 2.5, "seed": 1}})
    assert info.value.problems == [
        "policy.window: expected integer, got float 2.5",
        "policy.seed: unknown option for policy 'typed-kw' (valid: any other name)",  # reserved: distillctl sets it
    ]


def test_presets_validate_reports_option_types_of_builtins() -> None:
    from typer.testing import CliRunner

    from distillctl.cli import app

    result = CliRunner().invoke(app, ["presets", "validate", "smoke", "--set", "policy.window=abc", "--set", "data.image_size=big"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert "  policy.window: expected integer, got str 'abc'" in lines
    assert "  data.image_size: expected integer, got str 'big'" in lines


def test_preflight_crash_is_one_line_naming_the_plugin(use_plugins: Any, plugin: Any) -> None:
    from distillctl.errors import PluginError

    def teacher(*, weights: str | None = None, device: str = "cpu") -> str:
        return "teacher"

    def preflight(*, weights: str | None = None) -> None:
        raise RuntimeError("cache\nunreadable")

    teacher.preflight = preflight  # type: ignore[attr-defined]

    def register_teachers(register: Any) -> None:
        register("pf", teacher)

    use_plugins(plugin("pf_plugin", distribution="distillctl-pf", version="0.2", register_teachers=register_teachers))
    with pytest.raises(PluginError) as info:
        config.preflight_teacher({"teacher": {"name": "pf", "weights": None}})
    assert str(info.value) == (
        "teacher 'pf' from plugin distillctl-pf 0.2 failed in preflight: RuntimeError: cache unreadable "
        "(DISTILLCTL_DEBUG=1 shows the traceback.)"
    )


@pytest.mark.parametrize(("forward", "asked", "used"), [("arm", "auto", "total"), ("full", "auto", "layerwise"),
                                                        ("arm", "layerwise", "layerwise"), ("full", "task", "task")])
def test_reward_loss_auto_follows_the_step(forward: str, asked: str, used: str) -> None:
    """``auto`` rewards the total probe loss with module-local steps (only full steps train the task and KD
    terms) and the layerwise one with full steps; the validated config (report.json, run.toml) names it."""
    cfg = config.validate({"teacher": {"name": "quickstart"}, "train": {"forward": forward}, "loss": {"reward_loss": asked}},
                          check_components=False)
    assert cfg["loss"]["reward_loss"] == used
    assert config.reward_loss({"loss": {"reward_loss": asked}, "train": {"forward": forward}}) == used
    assert config.validate({"teacher": {"name": "quickstart"}}, check_components=False)["loss"]["reward_loss"] == "layerwise"
