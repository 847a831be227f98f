"""Trackers (``--report-to``): real smoke runs read back with each library's own reader, no mocks.

TensorBoard: ``EventAccumulator``; W&B: the offline run file (``WANDB_MODE=offline``) parsed with wandb's
own protobuf records; MLflow: ``MlflowClient`` on the run's ``mlruns/`` file store.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from distillctl import testing
from distillctl.cli import app
from distillctl.engine import Run
from distillctl.errors import DistillctlError

runner = CliRunner()
STEPS, EPISODES = 6, 3  # the smoke preset: 3 episodes of 2 steps


def _need(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test]' installs it)")


@pytest.fixture
def tracker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """W&B offline, with its config, cache and artifact staging in tmp (nothing in $HOME, no network)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _distill(out: Path, *extra: str) -> Any:
    return runner.invoke(app, ["distill", "--preset", "smoke", "--out", str(out), "--quiet", *extra])


# ----------------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_event_files_hold_steps_episodes_and_eval(tmp_path: Path) -> None:
    _need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "R"
    res = _distill(out, "--report-to", "tensorboard")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no event file"
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    # per step: every loss term and the learning rate, at steps 1..6
    total = acc.Scalars("train/total")
    assert [e.step for e in total] == list(range(1, STEPS + 1))
    assert [e.step for e in acc.Scalars("train/lr")] == list(range(1, STEPS + 1))
    assert {"train/task", "train/kd", "train/layerwise"} <= tags
    # the per-step values are the ones the episode means in report.json are made of
    for i, ep in enumerate(report["episodes"]):
        steps = [e.value for e in total[2 * i: 2 * i + 2]]
        assert sum(steps) / 2 == pytest.approx(ep["train"]["total"], rel=1e-5)
    # per episode, at the episode's last step: reward, probe loss, arm (index and one indicator per arm), posterior
    rewards = acc.Scalars("episode/reward")
    assert [e.step for e in rewards] == [2, 4, 6]
    assert [e.value for e in rewards] == pytest.approx([ep["reward"] for ep in report["episodes"]], rel=1e-5)
    assert [e.value for e in acc.Scalars("episode/probe_loss")] == pytest.approx(
        [ep["probe_loss"] for ep in report["episodes"]], rel=1e-5)
    arms = [a["arm"] for a in report["arms"]]
    assert [arms[int(e.value)] for e in acc.Scalars("episode/arm_index")] == [ep["arm"] for ep in report["episodes"]]
    for arm in arms:
        assert f"episode/arm/{arm}" in tags and f"posterior/{arm}/mean" in tags
    assert acc.Scalars(f"episode/arm/{report['episodes'][0]['arm']}")[0].value == 1.0
    # the evaluation at the end
    assert acc.Scalars("eval/student/i2t_r1")[-1].value == pytest.approx(report["eval"]["student"]["i2t_r1"])
    assert acc.Scalars("eval/teacher/i2t_r1")[-1].value == pytest.approx(report["eval"]["teacher"]["i2t_r1"])
    # the config, as text and as hyperparameters (TensorBoard's HParams plugin data)
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert "config/text_summary" in acc.Tags()["tensors"]
    start = plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["train.lr"].number_value == pytest.approx(report["config"]["train"]["lr"])
    assert hp["teacher.name"].string_value == "quickstart" and hp["train.report_to"].string_value == "tensorboard"


# ----------------------------------------------------------------------------------------- W&B + MLflow
@pytest.fixture(scope="module")
def wandb_mlflow_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """One smoke run logged to W&B (offline) and MLflow (file store in OUT/mlruns)."""
    _need("wandb")
    _need("mlflow")
    from distillctl import plugins

    tmp = tmp_path_factory.mktemp("wm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(tmp / "wandb-home" / var.lower()))
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        plugins.reset_plugins(plugins.load_plugins(include_entry_points=False))
        out = tmp / "R"
        res = _distill(out, "--report-to", "wandb,mlflow", "--set", "train.report_options={wandb = {project = 'smoke'}}")
        plugins.reset_plugins(None)
    assert res.exit_code == 0, res.output
    yield out, json.loads((out / "report.json").read_text())


def _wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B run file (leveldb-log framing, wandb's own protobuf ``Record``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        buf += chunk
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_run_holds_steps_episodes_config_eval_and_report(wandb_mlflow_run: tuple[Path, dict[str, Any]]) -> None:
    out, report = wandb_mlflow_run
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    history: dict[int, dict[str, Any]] = {}
    config, summary, artifacts, exit_code = {}, {}, [], None
    for r in _wandb_records(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history.setdefault(r.history.step.num, {}).update(items)
        elif kind == "run":
            config.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.run.config.update})
            assert r.run.project == "smoke"
        elif kind == "summary":
            summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update})
        elif kind == "artifact":
            artifacts += [e.path for e in r.artifact.manifest.contents]
        elif kind == "exit":
            exit_code = r.exit.exit_code
    assert sorted(history) == list(range(1, STEPS + 1))
    assert all("train/total" in history[s] and "train/lr" in history[s] for s in history)
    assert [history[s]["episode/reward"] for s in (2, 4, 6)] == pytest.approx([e["reward"] for e in report["episodes"]])
    arms = [a["arm"] for a in report["arms"]]
    assert [arms[history[s]["episode/arm_index"]] for s in (2, 4, 6)] == [e["arm"] for e in report["episodes"]]
    assert history[6]["eval/student/i2t_r1"] == pytest.approx(report["eval"]["student"]["i2t_r1"])
    assert summary["eval/teacher/i2t_r1"] == pytest.approx(report["eval"]["teacher"]["i2t_r1"])
    assert config["train"]["report_to"] == ["wandb", "mlflow"]  # the run config as hyperparameters
    assert config["teacher"]["name"] == "quickstart"
    assert {"report.html", "report.json"} <= set(artifacts)
    assert exit_code == 0


def test_mlflow_file_store_holds_steps_episodes_params_eval_and_report(wandb_mlflow_run: tuple[Path, dict[str, Any]]) -> None:
    from mlflow.tracking import MlflowClient

    out, report = wandb_mlflow_run
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("distillctl")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "R"
    assert run.data.params["train.report_to"] == "wandb,mlflow" and run.data.params["teacher.name"] == "quickstart"
    total = client.get_metric_history(run.info.run_id, "train/total")
    assert sorted(m.step for m in total) == list(range(1, STEPS + 1))
    rewards = sorted(client.get_metric_history(run.info.run_id, "episode/reward"), key=lambda m: m.step)
    assert [m.step for m in rewards] == [2, 4, 6]
    assert [m.value for m in rewards] == pytest.approx([e["reward"] for e in report["episodes"]])
    assert run.data.metrics["eval/student/i2t_r1"] == pytest.approx(report["eval"]["student"]["i2t_r1"])
    assert run.data.metrics["eval/student/text_retrieval_recall_1"] == pytest.approx(
        report["eval"]["student"]["text_retrieval_recall@1"])  # MLflow keys take no '@'
    assert {f.path for f in client.list_artifacts(run.info.run_id)} >= {"report.html", "report.json"}


# ----------------------------------------------------------------------------------------- start-up failures
def test_missing_tracker_package_is_one_line_before_any_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails, as it does where it is not installed
    out = tmp_path / "R"
    res = runner.invoke(app, ["distill", "--preset", "smoke", "--out", str(out), "--quiet", "--report-to", "wandb"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: tracker 'wandb' needs the wandb package"), res.output
    assert "pip install 'wandb'" in lines[0] and "distillctl[wandb]" in lines[0]
    assert not out.exists() or not any(out.iterdir()), "a refused run wrote into --out"


def test_plugin_tracker_whose_import_fails_stops_the_run_before_models(tmp_path: Path, use_plugins: Any, plugin: Any) -> None:
    def make_broken() -> Any:
        """Needs a library that is not installed."""
        import distillctl_no_such_tracking_library  # noqa: F401

    use_plugins(plugin("broken-tracker", register_trackers=lambda register: register("broken", make_broken)))
    cfg = _smoke_cfg("train.report_to=['broken']")
    run = Run(cfg, tmp_path / "R")
    with pytest.raises(DistillctlError) as info:
        run.execute()
    text = str(info.value)
    assert "tracker 'broken' from plugin broken-tracker" in text and "distillctl_no_such_tracking_library" in text
    assert "pip install distillctl_no_such_tracking_library" in text and "\n" not in text
    assert run.ctx.teacher is None and run.ctx.student is None  # nothing was built


def _smoke_cfg(*overrides: str) -> dict[str, Any]:
    from distillctl.cli.distill_cmd import build_config

    cfg, _ = build_config("smoke", {}, ["eval.evaluators=[]", *overrides])
    return cfg


class _Recorder:
    """A throw-away tracker that keeps what it gets and can be told to fail."""

    def __init__(self, fail_in: str | None = None) -> None:
        self.name, self.fail_in = "recorder", fail_in
        self.calls: list[tuple[str, Any]] = []

    def start(self, *, out_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        self.calls.append(("start", run_name))
        if self.fail_in == "start":
            raise ConnectionError("tracking server unreachable")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.calls.append(("log_metrics", step))
        if self.fail_in == "log_metrics" and step >= 4:
            raise OSError("disk full")

    def finish(self, *, failed: bool = False) -> None:
        self.calls.append(("finish", failed))


def test_a_tracker_failing_mid_run_never_loses_the_run(tmp_path: Path, use_plugins: Any, plugin: Any) -> None:
    made: list[_Recorder] = []

    def make_recorder() -> Any:
        """Records."""
        made.append(_Recorder(fail_in="log_metrics"))
        return made[-1]

    use_plugins(plugin("rec", register_trackers=lambda register: register("recorder", make_recorder)))
    events: list[tuple[str, dict[str, Any]]] = []
    report = Run(_smoke_cfg("train.report_to=['recorder']"), tmp_path / "R",
                 on_event=lambda kind, payload: events.append((kind, payload))).execute()
    assert (tmp_path / "R" / "student.safetensors").is_file() and len(report["episodes"]) == EPISODES
    warnings = [p["message"] for k, p in events if k == "warning"]
    assert warnings == ["tracker 'recorder' failed in log_metrics and was stopped: OSError: disk full; the run goes on."]
    steps = [s for name, s in made[0].calls if name == "log_metrics"]
    assert steps[:4] == [1, 2, 2, 3] and steps[-1] == 4  # steps 1-2, episode 1 at step 2, then it failed at 4
    assert made[0].calls[-1] == ("finish", True)  # a dropped tracker is closed as failed


def test_a_tracker_that_cannot_start_is_one_line_before_any_model(tmp_path: Path, use_plugins: Any, plugin: Any) -> None:
    use_plugins(plugin("rec", register_trackers=lambda register: register("recorder", lambda: _Recorder(fail_in="start"))))
    run = Run(_smoke_cfg("train.report_to=['recorder']"), tmp_path / "R")
    with pytest.raises(DistillctlError, match=r"^tracker 'recorder' could not start: ConnectionError: tracking server unreachable$"):
        run.execute()
    assert run.ctx.teacher is None
    assert not (tmp_path / "R").exists()  # the folder this run created is gone again


def test_report_to_names_and_options_are_validated_before_anything(tmp_path: Path) -> None:
    res = runner.invoke(app, ["presets", "validate", "smoke", "--set", "train.report_to=tensorbord,mlflow",
                              "--set", "train.report_options={wandb = {projekt = 'x'}}"])
    assert res.exit_code == 1
    assert "train.report_to[0]: unknown tracker 'tensorbord'" in res.output and "Did you mean 'tensorboard'" in res.output
    assert "train.report_options.wandb.projekt: unknown option for tracker 'wandb'" in res.output


def test_plugins_lists_the_trackers() -> None:
    res = runner.invoke(app, ["plugins", "--json"])
    assert res.exit_code == 0
    names = {c["name"] for c in json.loads(res.output)["components"] if c["kind"] == "tracker"}
    assert names == {"tensorboard", "wandb", "mlflow"}


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_builtin_trackers_pass_the_conformance_kit(name: str, tmp_path: Path, tracker_env: None) -> None:
    _need({"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}[name])
    written = testing.check_tracker(name, tmp_path / "out")
    assert written, f"{name} wrote nothing under out_dir"


def test_wandb_without_a_login_is_one_line_before_any_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             tracker_env: None) -> None:
    _need("wandb")
    monkeypatch.setenv("WANDB_MODE", "online")  # online, and no API key anywhere: wandb refuses without a prompt
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc
    out = tmp_path / "R"
    res = _distill(out, "--report-to", "wandb")
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: tracker 'wandb' could not start: "), res.output
    assert "wandb login" in lines[0] and "WANDB_MODE=offline" in lines[0]
    assert not (out / "run.toml").exists() and not (out / "student.safetensors").exists()


def test_a_failed_run_keeps_its_tracker_logs(tmp_path: Path, use_plugins: Any, plugin: Any) -> None:
    _need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class Breaks:
        uses_rewards = False

        def __init__(self, *, arms: list[tuple[str, ...]], seed: int) -> None:
            self.n = 0

        def select(self, episode: int) -> int:
            if episode == 2:
                raise RuntimeError("policy bug")
            return 0

        def update(self, arm: int, reward: float) -> None: ...

        def posterior(self) -> list[dict[str, float]]:
            return [{"mean": 0.0, "std": 1.0, "n": 0.0}] * 3

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state: dict[str, Any]) -> None: ...

    use_plugins(plugin("breaks", register_policies=lambda register: register("breaks", Breaks)))
    out = tmp_path / "R"
    with pytest.raises((RuntimeError, DistillctlError), match="policy bug"):  # a policy that breaks in episode 3
        Run(_smoke_cfg("train.report_to=['tensorboard']", "policy.name=breaks"), out).execute()
    assert sorted(p.name for p in out.iterdir()) == ["tensorboard"]  # nothing else of the failed run, its logs kept
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/total")] == [1, 2, 3, 4]  # the two episodes it finished
    assert [e.step for e in acc.Scalars("episode/reward")] == [2, 4]


def test_trackers_log_wherever_the_user_points(tmp_path: Path, tracker_env: None) -> None:
    _need("tensorboard")
    _need("mlflow")
    from mlflow.tracking import MlflowClient

    elsewhere = tmp_path / "elsewhere"
    testing.check_tracker("tensorboard", tmp_path / "tb-out", log_dir=str(elsewhere / "tb"))
    assert list((elsewhere / "tb").glob("events.out.tfevents.*")) and not any((tmp_path / "tb-out").glob("tensorboard"))
    written = testing.check_tracker("mlflow", tmp_path / "ml-out", tracking_uri=str(elsewhere / "mlruns"), experiment="mine")
    assert not any(w.startswith("mlruns") for w in written)
    client = MlflowClient(tracking_uri=(elsewhere / "mlruns").resolve().as_uri())
    run = client.search_runs([client.get_experiment_by_name("mine").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.metrics["eval/student/i2t_r1"] == 0.5
