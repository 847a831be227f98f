"""One error boundary for plugin code, in every command: a plugin's fault is one line naming the plugin,
its distribution and version, never a traceback; ``DISTILLCTL_DEBUG=1`` shows the traceback.

Every test installs ``faulty`` (distribution ``distillctl-faulty`` 9.9.9), whose components fail in the
ways plugins do: a factory that raises, a method that raises, a required option, an evaluator written
for the 0.1 plugin API, a hook that raises, an import that fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import pytest
from typer.testing import CliRunner

from distillctl import plugins
from distillctl.cli import app
from distillctl.errors import PluginError
from distillctl.registry import Guarded

PLUGIN = "distillctl-faulty 9.9.9"


class SelectFails:
    """A policy whose select raises (options typed, so `typed[window=abc]` is refused before it is built)."""

    def __init__(self, *, arms: list[tuple[str, ...]], seed: int, window: int = 8) -> None:
        self.arms = list(arms)

    def select(self, episode: int) -> int:
        raise KeyError("no such arm")

    def update(self, arm: int, reward: float) -> None:
        pass

    def posterior(self) -> list[dict[str, float]]:
        return [{} for _ in self.arms]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def bad_init(*, arms: list[tuple[str, ...]], seed: int) -> Any:
    """A policy factory that raises."""
    raise ValueError("cannot start without a GPU")


def needs_threshold(*, arms: list[tuple[str, ...]], seed: int, threshold: float) -> Any:
    """A policy with a required option."""
    from distillctl.policies import FixedOrderPolicy

    return FixedOrderPolicy(arms, seed=seed)


class Scorer(Protocol):  # not runtime_checkable: isinstance() raises TypeError
    def score(self) -> float: ...


def protocol_option(*, arms: list[tuple[str, ...]], seed: int, scorer: Scorer | None = None) -> Any:
    """A policy whose option is annotated with a Protocol."""
    from distillctl.policies import FixedOrderPolicy

    return FixedOrderPolicy(arms, seed=seed)


class OldEvaluator:
    """An evaluator written for the 0.1 plugin API."""

    name = "old-eval"

    def evaluate(self, model: Any, tokenizer: Any, transform: Any, dataset: Any, *, device: str = "cpu") -> dict[str, float]:
        return {"score": 1.0}


def old_eval() -> Any:
    """0.1 evaluator, built by a function (its signature is seen only once it is built)."""
    return OldEvaluator()


class RaisingEvaluator:
    name = "raising-eval"

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        raise RuntimeError("scorer crashed")


def raising_eval() -> Any:
    """An evaluator whose evaluate raises."""
    return RaisingEvaluator()


def typed_eval(*, beams: int = 1, mode: str) -> Any:
    """An evaluator with a typed and a required option."""
    return RaisingEvaluator()


def bad_teacher(*, weights: str | None = None, device: str = "cpu") -> Any:
    """A teacher factory that raises."""
    raise OSError("weights gone")


def bad_student(*, teacher: Any, splitter: Any) -> Any:
    """A student factory that raises."""
    return 1 / 0


def _register_policies(register: Any) -> None:
    register("select-fails", SelectFails)
    register("typed", SelectFails)
    register("bad-init", bad_init)
    register("needs-x", needs_threshold)
    register("proto", protocol_option)


def _register_evaluators(register: Any) -> None:
    register("old-eval", old_eval)
    register("old-eval-class", OldEvaluator)
    register("raising-eval", raising_eval)
    register("typed-eval", typed_eval)


def _register_teachers(register: Any) -> None:
    register("bad-teacher", bad_teacher)


def _register_students(register: Any) -> None:
    register("bad-student", bad_student)


def _hook_raises(register: Any) -> None:
    raise RuntimeError("hook exploded")


def faulty(make_plugin: Any) -> Any:
    return make_plugin("faulty", distribution="distillctl-faulty", version="9.9.9",
                       register_policies=_register_policies, register_evaluators=_register_evaluators,
                       register_teachers=_register_teachers, register_students=_register_students)


def broken(make_plugin: Any) -> Any:
    return make_plugin("broken_hooks", distribution="distillctl-broken", version="1.0", register_datasets=_hook_raises)


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def one_line(result: Any, *needles: str) -> str:
    """The command failed with exactly one error line (no traceback), holding every needle."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an escaped exception
    text = result.stderr if result.stderr else result.output
    assert "Traceback" not in result.output + text
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture
def with_faulty(use_plugins: Any, plugin: Any) -> None:
    use_plugins(faulty(plugin), broken(plugin))


# ----------------------------------------------------------------- simulate
@pytest.mark.usefixtures("with_faulty")
@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("typed[window=abc]", ["policy 'typed[window=abc]'", PLUGIN, "window: expected integer, got str 'abc'"]),
        ("bad-init", ["policy 'bad-init' from plugin " + PLUGIN, "failed: ValueError: cannot start without a GPU"]),
        ("needs-x", ["policy 'needs-x'", PLUGIN, "required option 'threshold' missing", "needs-x[threshold=VALUE]"]),
        ("needs-x[threshold='high']", ["threshold: expected number, got str 'high'"]),
        ("select-fails", ["policy 'select-fails' from plugin " + PLUGIN, "failed in select: KeyError: 'no such arm'"]),
    ],
)
def test_simulate_plugin_policy_faults_are_one_line(spec: str, needles: list[str]) -> None:
    one_line(run("simulate", "--policies", spec, "--seeds", "1", "--episodes", "5"), *needles)


def test_simulate_debug_shows_the_traceback(with_faulty: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLCTL_DEBUG", "1")
    result = run("simulate", "--policies", "bad-init", "--seeds", "1", "--episodes", "5")
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and not isinstance(result.exception, SystemExit)
    assert isinstance(result.exception.__cause__, ValueError)  # the plugin's own exception, with its traceback


def test_simulate_suite_skips_a_broken_plugin_policy_with_a_warning(with_faulty: None) -> None:
    result = run("simulate", "--suite", "--seeds", "1", "--horizons", "8", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["policy"] for r in json.loads(result.stdout)["rows"]}
    assert {"optima", "uniform", "fixed-order"} <= rows
    assert not rows & {"bad-init", "needs-x", "select-fails", "typed"}  # typed fails in select too
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
    assert any("bad-init" in w and PLUGIN in w for w in warnings), result.stderr
    assert any("select-fails" in w and "failed in select" in w for w in warnings), result.stderr
    assert "Traceback" not in result.output


def test_simulate_suite_with_a_clash_does_not_blame_policies(use_plugins: Any, plugin: Any) -> None:
    def greedy(register: Any) -> None:
        register("greedy", SelectFails)

    use_plugins(plugin("a", distribution="dist-a", register_policies=greedy),
                plugin("b", distribution="dist-b", register_policies=greedy))
    result = run("simulate", "--suite", "--seeds", "1", "--horizons", "8", "--json")
    assert result.exit_code == 0, result.output
    assert "--policies" not in result.output
    assert "duplicate policy name 'greedy'" in result.stderr and "warning: skipped greedy" in result.stderr


def test_guarded_passes_attributes_and_distillctl_errors() -> None:
    from distillctl.errors import ConfigError

    class P:
        uses_rewards = False

        def select(self, episode: int) -> int:
            raise ConfigError(["policy.x: bad"])

    entry = plugins.get_plugins().registry("policy").get("optima")
    g = Guarded(entry, P())
    assert g.uses_rewards is False
    with pytest.raises(ConfigError):  # a handled error passes through unchanged
        g.select(0)


def _deep_in_the_plugin() -> None:
    raise KeyError("x")


def _caught(fn: Any) -> BaseException:
    """``fn()``'s exception, caught in a frame of no plugin's module (as the CLI's boundary is)."""
    ns: dict[str, Any] = {"__name__": "somewhere_else"}
    exec("def catch(fn):\n    try:\n        fn()\n    except Exception as exc:\n        return exc\n", ns)  # noqa: S102
    return ns["catch"](fn)


def test_plugin_fault_finds_the_plugin_on_the_traceback(with_faulty: None) -> None:
    """The CLI's last line of defence, for plugin code no call site wrapped (e.g. the engine calling a
    policy's select): the innermost frame of a loaded third-party plugin's module names it."""
    import functools

    from distillctl.policies import arm_name

    fault = plugins.plugin_fault(_caught(_deep_in_the_plugin))  # this test module holds faulty's factories
    assert fault is not None and isinstance(fault.__cause__, KeyError)
    assert str(fault) == ("plugin 'faulty' (distillctl-faulty 9.9.9) failed in _deep_in_the_plugin: KeyError: 'x' "
                          "(DISTILLCTL_DEBUG=1 shows the traceback.)")
    bug = _caught(functools.partial(arm_name, 5))  # distillctl's own code failing
    assert isinstance(bug, TypeError) and plugins.plugin_fault(bug) is None  # a bug in distillctl keeps its traceback


# ----------------------------------------------------------------- presets validate
@pytest.mark.usefixtures("with_faulty")
@pytest.mark.parametrize(
    ("sets", "needles"),
    [
        (["policy.name=needs-x"], ["policy.threshold: required option of policy 'needs-x' is missing"]),
        (["policy.name=typed", "policy.window=abc"], ["policy.window: expected integer, got str 'abc'"]),
        (["eval.evaluators=['typed-eval']"], ["eval.options.typed-eval.mode: required option"]),
        (["eval.options.typed-eval.beams=abc", "eval.options.typed-eval.mode=x"],
         ["eval.options.typed-eval.beams: expected integer, got str 'abc'"]),
        (["eval.options.captioning.beams=abc"], ["eval.options.captioning.beams: expected integer, got str 'abc'"]),
        (["family.bogus=1"], ["family.bogus: unknown option for family 'coca'"]),
        (["family.caption_weight=abc"], ["family.caption_weight: expected number, got str 'abc'"]),
        (["splitter.bogus=1"], ["splitter.bogus: unknown option for splitter 'coca'"]),
        (["student.ratio=half"], ["student.ratio: expected number"]),
        (["data.image_size=big"], ["data.image_size: expected integer"]),
        (["eval.evaluators=['old-eval-class']"], ["evaluator 'old-eval-class' from plugin " + PLUGIN,
                                                  "the signature of the 0.1 plugin API", "evaluate(bundle, ctx)"]),
    ],
)
def test_presets_validate_refuses_wrong_and_missing_options_of_every_kind(sets: list[str], needles: list[str]) -> None:
    args = [a for s in sets for a in ("--set", s)]
    result = run("presets", "validate", "smoke", *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    body = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert len(body) == 1, result.stderr  # exactly the one problem
    for needle in needles:
        assert needle in body[0], (needle, body[0])


def test_presets_validate_auto_family_without_a_declared_family_checks_every_family(with_faulty: None) -> None:
    result = run("presets", "validate", "smoke", "--set", "teacher.name=open-clip:coca_ViT-B-32",
                 "--set", "family.bogus=1", "--set", "family.embedding_kd_weight=0.5")
    assert result.exit_code == 1
    body = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert body == ["family.bogus: no family takes this option (auto: the teacher's family; valid for some family: "
                    "caption_weight, clip_weight, contrastive_kd_weight, embedding_kd_weight)"]


def test_presets_validate_protocol_annotation_is_not_a_traceback(with_faulty: None) -> None:
    result = run("presets", "validate", "smoke", "--set", "policy.name=proto", "--set", "policy.scorer=x")
    assert result.exit_code == 0, result.output  # an annotation we cannot check accepts the value


def test_distill_refuses_a_missing_plugin_option_before_building(with_faulty: None, tmp_path: Path) -> None:
    one_line_lines = run("distill", "--preset", "smoke", "--policy", "needs-x", "--out", str(tmp_path / "o"))
    assert one_line_lines.exit_code == 1
    assert "policy.threshold: required option of policy 'needs-x' is missing" in one_line_lines.stderr
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------- plugins
def test_plugins_debug_shows_a_broken_hook_traceback(with_faulty: None, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = run("plugins")
    assert plain.exit_code == 0
    assert "plugin 'broken_hooks' (distillctl-broken 1.0) is broken: RuntimeError: hook exploded" in plain.stdout
    assert "Traceback" not in plain.stdout
    monkeypatch.setenv("DISTILLCTL_DEBUG", "1")
    debug = run("plugins")
    assert debug.exit_code == 0
    assert "Traceback (most recent call last)" in debug.stdout and "_hook_raises" in debug.stdout


def test_plugins_debug_shows_a_failed_import_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A real entry point whose module fails to import: the line, and under DEBUG where it failed."""
    import importlib.metadata as md

    pkg = tmp_path / "boom_plugin.py"
    pkg.write_text("raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Dist:
        name, version = "distillctl-boom", "0.4"

    ep = md.EntryPoint("boom", "boom_plugin", "distillctl")
    object.__setattr__(ep, "dist", Dist())
    monkeypatch.setattr(md, "entry_points", lambda group=None: [ep] if group == "distillctl" else [])
    plugins.reset_plugins(plugins.load_plugins())
    result = run("plugins")
    assert "plugin 'boom' (distillctl-boom 0.4) is broken: ImportError: needs libfoo" in result.stdout
    assert "Traceback" not in result.stdout
    monkeypatch.setenv("DISTILLCTL_DEBUG", "1")
    result = run("plugins")
    assert "Traceback (most recent call last)" in result.stdout and "boom_plugin.py" in result.stdout


# ----------------------------------------------------------------- inspect, report
@pytest.mark.usefixtures("with_faulty")
def test_inspect_teacher_and_student_faults_are_one_line() -> None:
    one_line(run("inspect", "--teacher", "bad-teacher"),
             "teacher 'bad-teacher' from plugin " + PLUGIN, "OSError: weights gone")
    one_line(run("inspect", "--teacher", "quickstart", "--student", "bad-student"),
             "student 'bad-student' from plugin " + PLUGIN, "ZeroDivisionError")


def test_report_works_with_faulty_plugins_installed(with_faulty: None, tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps({"episodes": [], "config": {}}))
    result = run("report", str(tmp_path), "--md")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.md").is_file()


def test_report_of_a_run_whose_policy_was_never_consulted_says_so(tmp_path: Path) -> None:
    doc = {"config": {"policy": {"name": "optima"}},
           "episodes": [{"episode": i, "arm": "vision", "burn_in": True, "reward": 0.0, "probe_loss": 1.0} for i in (1, 2)]}
    (tmp_path / "report.json").write_text(json.dumps(doc))
    result = run("report", str(tmp_path), "--terminal")
    assert result.exit_code == 0, result.output
    assert "policy 'optima' was never consulted: all 2 episodes were burn-in" in result.output
    doc["episodes"][1]["burn_in"] = False
    (tmp_path / "report.json").write_text(json.dumps(doc))
    assert "never consulted" not in run("report", str(tmp_path), "--terminal").output


# ----------------------------------------------------------------- eval (torch: the bundled quickstart teacher)
@pytest.mark.usefixtures("with_faulty")
def test_eval_refuses_a_0_1_evaluator_in_one_line_saying_what_changed() -> None:
    line = one_line(run("eval", "quickstart", "--data", "shapes", "--evaluators", "old-eval", "--samples", "8",
                        "--device", "cpu"),
                    "evaluator 'old-eval' from plugin " + PLUGIN, "the signature of the 0.1 plugin API",
                    "calls evaluate(bundle, ctx)", "has evaluate(model, tokenizer, transform, dataset, *, device)")
    assert "Breaking (plugin API)" in line


@pytest.mark.usefixtures("with_faulty")
def test_eval_evaluator_that_raises_is_one_line_naming_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("eval", "quickstart", "--data", "shapes", "--evaluators", "raising-eval", "--samples", "8", "--device", "cpu")
    one_line(run(*args), "evaluator 'raising-eval' from plugin " + PLUGIN, "failed in evaluate: RuntimeError: scorer crashed")
    monkeypatch.setenv("DISTILLCTL_DEBUG", "1")  # the traceback, down to the plugin's own raise
    result = run(*args)
    assert isinstance(result.exception, PluginError) and isinstance(result.exception.__cause__, RuntimeError)
    assert result.exception.__cause__.__traceback__ is not None


# ----------------------------------------------------------------- distill, compare (a tiny real run each)
@pytest.mark.usefixtures("with_faulty")
def test_distill_evaluator_fault_names_the_plugin_and_keeps_the_student(tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = one_line(run("distill", "--preset", "smoke", "--out", str(out), "--quiet", "--set", "train.episodes=1",
                        "--set", "train.episode_steps=1", "--set", "eval.evaluators=['raising-eval']", "--set", "eval.samples=8"),
                    "evaluator 'raising-eval' from plugin " + PLUGIN, "failed in evaluate: RuntimeError: scorer crashed")
    assert "evaluation failed after the student was saved" in line
    assert (out / "student.safetensors").is_file()
    report = json.loads((out / "report.json").read_text())
    assert PLUGIN in report["error"]
    assert report["policy_decisions"] == 1  # smoke has no burn-in: even a one-episode run asks the policy


@pytest.mark.slow  # a second tiny training run; the distill one above covers the same boundary by default
@pytest.mark.usefixtures("with_faulty")
def test_compare_policy_fault_deep_in_the_engine_names_the_plugin(tmp_path: Path) -> None:
    """The engine calls the policy's select itself: the CLI boundary finds the plugin on the traceback."""
    one_line(run("compare", "--policies", "select-fails", "--seeds", "0", "--out", str(tmp_path / "cmp"), "--quiet",
                 "--set", "train.episodes=1", "--set", "eval.evaluators=[]"),
             "plugin 'faulty' (" + PLUGIN + ") failed in select: KeyError: 'no such arm'")
    assert not (tmp_path / "cmp" / "select-fails" / "seed0").exists()  # the failed run removed what it created
