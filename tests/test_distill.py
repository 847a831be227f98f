"""``distillctl distill`` end to end on the bundled quickstart teacher (tiny, CPU, offline).

The runs are real: real open_clip CoCa models, real data, real optimizer steps. They are kept short
(a few steps at batch 8) so the whole module runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from distillctl import engine
from distillctl.cli import app
from distillctl.cli.distill_cmd import build_config
from distillctl.quickstart import WEIGHTS_FILE

runner = CliRunner()
FAST = ["--set", "eval.evaluators=[]", "--quiet"]  # no end-of-run evaluation where a test does not look at it


def smoke_cfg(*overrides: str) -> dict[str, Any]:
    cfg, _ = build_config("smoke", {}, list(overrides))
    return cfg


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """One smoke run through the engine, fp32 export, keeping the in-memory student."""
    from distillctl import plugins

    plugins.reset_plugins(plugins.load_plugins(include_entry_points=False))
    out = tmp_path_factory.mktemp("smoke") / "run"
    run = engine.Run(smoke_cfg(), out)
    report = run.execute()
    plugins.reset_plugins(None)
    keep = {"teacher": run.ctx.teacher, "student_model": run.ctx.student_model, "policy": run.ctx.policy}
    return out, report, keep


def test_bundled_teacher_is_shipped() -> None:
    assert WEIGHTS_FILE.is_file()
    assert WEIGHTS_FILE.stat().st_size <= 10 * 1024 * 1024


def test_smoke_writes_every_artifact(smoke_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, report, _ = smoke_run
    for name in ("student.safetensors", "open_clip_config.json", "report.json", "report.md", "run.toml"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["steps"] == 6 and len(on_disk["episodes"]) == 3
    # the first pass of optima plays every single arm once (in an order drawn from its seeded RNG)
    assert sorted(e["arm"] for e in on_disk["episodes"]) == ["multimodal", "text", "vision"]
    assert all(isinstance(e["reward"], float) for e in on_disk["episodes"])
    assert {a["arm"]: a["pulls"] for a in on_disk["arms"]} == {"vision": 1, "text": 1, "multimodal": 1}
    assert on_disk["sizes"]["student_params"] < on_disk["sizes"]["teacher_params"]
    assert set(on_disk["eval"]["student"]) >= {"i2t_r1", "t2i_r1", "tf_token_acc"}
    assert "## Arms" in (out / "report.md").read_text()
    # run.toml is a valid preset that reproduces the config
    from distillctl.config import validate
    from distillctl.presets import load_preset

    assert validate(load_preset(out / "run.toml")) == report["config"]


def test_safetensors_metadata(smoke_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    from distillctl.export import load_student_state

    out, report, keep = smoke_run
    state, meta = load_student_state(out / "student.safetensors")
    assert meta["teacher"] == "quickstart" and meta["policy"] == "optima" and meta["arms"] == "single"
    assert meta["steps"] == "6" and meta["seed"] == "0" and meta["distillctl_version"]
    assert len(meta["teacher_weights_hash"]) == 64
    assert json.loads(meta["model_config"])["vision_cfg"]["layers"] == 3
    # projections are trained, never exported: the file holds exactly the student's own tensors
    assert set(state) == set(keep["student_model"].state_dict())


def test_export_loads_in_open_clip_unchanged(smoke_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    import open_clip

    out, report, keep = smoke_run
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    loaded.eval()
    student = keep["student_model"].eval()
    teacher = keep["teacher"]
    from distillctl.data.shapes import ShapesDataset

    ds = ShapesDataset("test")
    images = torch.stack([teacher.transform(ds[i].image) for i in range(6)])
    text = teacher.tokenizer([ds[i].caption for i in range(6)])
    with torch.no_grad():
        a, b = loaded(images, text), student(images, text)
    torch.testing.assert_close(a["image_features"], b["image_features"], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["text_features"], b["text_features"], atol=1e-5, rtol=0)
    # file size within 1% of parameter count x bytes per parameter (fp32)
    params = sum(p.numel() for p in student.state_dict().values())
    size = (out / "student.safetensors").stat().st_size
    assert abs(size - 4 * params) / (4 * params) < 0.01


def test_teacher_is_untouched_by_a_run(smoke_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    from distillctl.quickstart import load_quickstart_teacher

    _, _, keep = smoke_run
    teacher = keep["teacher"].model
    fresh = load_quickstart_teacher().model
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    for (k, a), (_, b) in zip(teacher.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_same_seed_same_arms_and_bit_identical_student(tmp_path: Path) -> None:
    cfg = smoke_cfg("eval.evaluators=[]", "train.episodes=5", "policy.window=3")
    r1 = engine.run(cfg, tmp_path / "a")
    r2 = engine.run(cfg, tmp_path / "b")
    assert [e["arm"] for e in r1["episodes"]] == [e["arm"] for e in r2["episodes"]]
    assert [e["reward"] for e in r1["episodes"]] == [e["reward"] for e in r2["episodes"]]
    a, b = load_file(tmp_path / "a" / "student.safetensors"), load_file(tmp_path / "b" / "student.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a different seed gives a different student
    r3 = engine.run(smoke_cfg("eval.evaluators=[]", "train.episodes=5", "policy.window=3", "train.seed=1"), tmp_path / "c")
    c = load_file(tmp_path / "c" / "student.safetensors")
    assert r3["episodes"] and not all(torch.equal(a[k], c[k]) for k in a)


def test_fixed_order_all_is_plain_layerwise_distillation(tmp_path: Path) -> None:
    res = invoke("distill", "--preset", "smoke", "--policy", "fixed-order", "--arms", "all", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [e["arm"] for e in report["episodes"]] == ["vision+text+multimodal"] * 3
    for e in report["episodes"]:  # every module's layerwise term was trained in every episode
        assert all(e["train"][f"lw/{m}"] > 0 for m in ("vision", "text", "multimodal"))


def test_single_arm_trains_only_its_module(tmp_path: Path) -> None:
    res = invoke("distill", "--preset", "smoke", "--policy", "fixed-order", "--set", "policy.order=['text']",
                 "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    for e in report["episodes"]:
        assert e["arm"] == "text"
        assert "lw/text" in e["train"] and "lw/vision" not in e["train"] and "lw/multimodal" not in e["train"]
        assert set(e["probe"]) >= {"lw/vision", "lw/text", "lw/multimodal"}  # probe covers every module


def test_bare_distill_runs_quickstart_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = invoke("distill", "--set", "train.episodes=1", "--set", "train.episode_steps=1",
                 "--set", "train.batch_size=8", "--set", "train.probe_batches=1", *FAST)
    assert res.exit_code == 0, res.output
    assert "running the bundled 'quickstart' preset" in res.output
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("quickstart-")
    assert "ratio = 0.5" in (runs[0] / "run.toml").read_text()


# ------------------------------------------------------------------------------ bad input
def test_unknown_names_exit_1_with_suggestion(tmp_path: Path) -> None:
    res = invoke("distill", "--preset", "smoke", "--policy", "optimal", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 1
    assert "unknown policy 'optimal'" in res.output and "Did you mean 'optima'" in res.output
    res = invoke("distill", "--preset", "smoke", "--teacher", "coca-largee", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 1 and "unknown teacher 'coca-largee'" in res.output and "coca-large" in res.output
    assert not (tmp_path / "o").exists()


def test_student_deeper_than_teacher(tmp_path: Path) -> None:
    res = invoke("distill", "--preset", "smoke", "--set", "student.vision=12", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 1
    assert "vision" in res.output and "12" in res.output and "6" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_batch_size_larger_than_dataset(tmp_path: Path) -> None:
    res = invoke("distill", "--preset", "smoke", "--set", "data.length=4", "--batch-size", "8", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 1
    assert "batch size 8 is larger than the 4 items" in res.output and "--batch-size" in res.output
    assert not (tmp_path / "o").exists()


def test_out_holding_a_run_is_refused_unless_overwrite(smoke_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, _, _ = smoke_run
    before = (out / "student.safetensors").read_bytes()
    res = invoke("distill", "--preset", "smoke", "--out", str(out), *FAST)
    assert res.exit_code == 1 and "already holds a run" in res.output and "--overwrite" in res.output
    assert (out / "student.safetensors").read_bytes() == before  # untouched


def test_overwrite_replaces_a_run(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert invoke("distill", "--preset", "smoke", "--out", str(out), "--set", "train.episodes=1", *FAST).exit_code == 0
    res = invoke("distill", "--preset", "smoke", "--out", str(out), "--overwrite", "--set", "train.episodes=2", *FAST)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "report.json").read_text())["steps"] == 4


def test_non_finite_loss_stops_with_episode_and_remedy(tmp_path: Path) -> None:
    res = invoke("distill", "--preset", "smoke", "--lr", "1e30", "--set", "train.warmup_steps=0",
                 "--set", "train.grad_clip=0.0", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 1, res.output
    assert "non-finite" in res.output and "episode 1" in res.output and "--lr" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_steps_and_episodes_conflict() -> None:
    res = invoke("distill", "--preset", "smoke", "--steps", "4", "--episodes", "2", *FAST)
    assert res.exit_code == 2 and "give only one" in res.output


def test_steps_sets_the_number_of_episodes(tmp_path: Path) -> None:
    res = invoke("distill", "--preset", "smoke", "--steps", "4", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["steps"] == 4 and len(report["episodes"]) == 2


# ------------------------------------------------------------------------------ eval
def test_eval_scores_student_and_teacher_side_by_side(smoke_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, report, _ = smoke_run
    res = invoke("eval", str(out), "--samples", "100", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    # same data, same model, same metric as the end-of-run evaluation of distill
    assert doc["student"]["i2t_r1"] == pytest.approx(report["eval"]["student"]["i2t_r1"])
    assert doc["teacher"]["tf_token_acc"] == pytest.approx(report["eval"]["teacher"]["tf_token_acc"])
    res = invoke("eval", str(out), "--samples", "20", "--evaluators", "captioning,efficiency", "--no-teacher")
    assert res.exit_code == 0, res.output
    assert "caption_word_acc" in res.output and "params_m" in res.output and "student / teacher" not in res.output


def test_eval_bad_input(smoke_run: tuple[Path, dict[str, Any], dict[str, Any]], tmp_path: Path) -> None:
    out, _, _ = smoke_run
    res = invoke("eval", str(tmp_path / "nosuch"))
    assert res.exit_code == 1 and "no such run" in res.output
    res = invoke("eval", str(out), "--evaluators", "retreival")
    assert res.exit_code == 1 and "Did you mean 'retrieval'" in res.output
    res = invoke("eval", str(out), "--set", "data.colour=red")
    assert res.exit_code == 2 and "data.colour: unknown option" in res.output
    (tmp_path / "student.safetensors").write_bytes(b"not a safetensors file")
    res = invoke("eval", str(tmp_path), "--data", "shapes")
    assert res.exit_code == 1 and "not a distillctl student" in res.output


# ------------------------------------------------------------------------------ data and weights errors, via the CLI
@pytest.mark.parametrize(
    ("source", "content", "message"),
    [
        ("csv", "filepath,title\n", "no items"),
        ("csv", "a,b\nx.png,hello\n", "no column 'filepath'"),
        ("csv", "filepath,title\nmissing.png,hello\n.,a directory\n", "no usable item, all 2 skipped"),
        ("coco", '{"foo": 1}', "not a COCO captions file"),
    ],
)
def test_unusable_data_fails_before_any_model(tmp_path: Path, source: str, content: str, message: str) -> None:
    path = tmp_path / ("data.csv" if source == "csv" else "captions_train.json")
    path.write_text(content)
    res = invoke("distill", "--preset", "smoke", "--data", source, "--set", f"data.path={path}",
                 "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 1, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_offline_tag_through_distill_is_one_line_before_torch_is_imported(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = (
        "import sys, json; from typer.testing import CliRunner; from distillctl.cli import app; "
        f"r = CliRunner().invoke(app, ['distill', '--preset', 'smoke', '--teacher', 'coca-large', '--out', {str(tmp_path / 'o')!r}, '--quiet']); "
        "print(json.dumps({'code': r.exit_code, 'out': r.output, 'torch': 'torch' in sys.modules}))"
    )
    for offline in ("1", None):  # with HF_HUB_OFFLINE, and as a new user without it (no network here)
        env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
        env.pop("HF_HUB_OFFLINE", None)
        if offline:
            env["HF_HUB_OFFLINE"] = offline
        res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout)
        out = res["out"].strip()
        assert res["code"] == 1, out
        assert len(out.splitlines()) == 1 and "--teacher-weights" in out and "empty-cache" in out
        assert res["torch"] is False  # failed in the preflight, before any heavy import
        assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ checkpoints and resume
class _Crash(Exception):
    pass


def test_resume_after_a_crash_is_bit_exact(tmp_path: Path) -> None:
    cfg = smoke_cfg("eval.evaluators=[]", "train.episodes=4", "train.checkpoint_every=1", "policy.window=3")
    straight = engine.run(cfg, tmp_path / "straight")

    def crash_after_two(kind: str, payload: dict[str, Any]) -> None:
        if kind == "episode" and payload["episode"] == 2:
            raise _Crash

    with pytest.raises(_Crash):
        engine.run(cfg, tmp_path / "crashed", on_event=crash_after_two)
    ckpt_dir = tmp_path / "crashed" / "checkpoints"
    assert (ckpt_dir / "last.pt").is_file() and not (tmp_path / "crashed" / "student.safetensors").exists()
    # the unfinished run is protected, then resumed from the CLI
    res = invoke("distill", "--preset", "smoke", "--out", str(tmp_path / "crashed"), *FAST)
    assert res.exit_code == 1 and "--resume" in res.output
    res = invoke("distill", "--resume", "--out", str(tmp_path / "crashed"), "--quiet")
    assert res.exit_code == 0, res.output
    resumed = json.loads((tmp_path / "crashed" / "report.json").read_text())
    assert [e["arm"] for e in resumed["episodes"]] == [e["arm"] for e in straight["episodes"]]
    assert [e["reward"] for e in resumed["episodes"]] == [e["reward"] for e in straight["episodes"]]
    a = load_file(tmp_path / "straight" / "student.safetensors")
    b = load_file(tmp_path / "crashed" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not ckpt_dir.exists()  # a finished run drops its resume state


def test_resume_bad_input(tmp_path: Path) -> None:
    res = invoke("distill", "--resume", "--out", str(tmp_path))
    assert res.exit_code == 2 and "nothing to resume" in res.output
    res = invoke("distill", "--resume", "--out", str(tmp_path), "--lr", "0.1")
    assert res.exit_code == 2 and "--resume takes only --out" in res.output


# ------------------------------------------------------------------------------ observers and third-party components
def test_observer_hooks_see_every_episode_and_the_run_end(tmp_path: Path, use_plugins: Any, plugin: Any) -> None:
    episodes: list[tuple[int, tuple[str, ...], float]] = []
    seen: list[tuple[int, float]] = []  # checked after the run: an assert in a hook is swallowed as a plugin error
    ends: list[tuple[str, int]] = []

    def on_episode_end(episode: int, arm: tuple[str, ...], reward: float, probe_loss: float, state: dict[str, Any]) -> None:
        episodes.append((episode, arm, reward))
        seen.append((state["step"], probe_loss))

    def on_run_end(out_dir: str, report: dict[str, Any]) -> None:
        ends.append((out_dir, report["steps"]))

    use_plugins(plugin("watcher", on_episode_end=on_episode_end, on_run_end=on_run_end))
    report = engine.run(smoke_cfg("eval.evaluators=[]"), tmp_path / "o")
    assert [e[0] for e in episodes] == [1, 2, 3]
    assert [e[1] for e in episodes] == [tuple(e["arm"].split("+")) for e in report["episodes"]]
    assert [e[2] for e in episodes] == [e["reward"] for e in report["episodes"]]
    assert ends == [(str(tmp_path / "o"), 6)]
    assert [step for step, _ in seen] == [2, 4, 6] and all(p > 0 for _, p in seen)


def test_a_third_party_policy_drives_the_real_loop(tmp_path: Path, use_plugins: Any, plugin: Any) -> None:
    from distillctl.policies import FixedOrderPolicy

    def only_last(*, arms: list[tuple[str, ...]], seed: int) -> Any:
        """Always the last arm."""
        return FixedOrderPolicy(arms, seed, order=["+".join(arms[-1])])

    use_plugins(plugin("lastarm", register_policies=lambda register: register("last-arm", only_last)))
    res = invoke("distill", "--preset", "smoke", "--policy", "last-arm", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [e["arm"] for e in report["episodes"]] == ["multimodal"] * 3


def test_config_student_of_other_widths_gets_projections_that_are_not_exported(tmp_path: Path) -> None:
    import open_clip

    from distillctl.quickstart import model_config

    cfg = model_config()
    cfg["embed_dim"] = 64
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "layers": 3, "width": 96, "attn_pooler_heads": 2}
    cfg["text_cfg"] = {**cfg["text_cfg"], "width": 64, "heads": 2, "layers": 2}
    cfg["multimodal_cfg"] = {**cfg["multimodal_cfg"], "width": 64, "heads": 2, "layers": 2}
    path = tmp_path / "student.json"
    path.write_text(json.dumps(cfg))
    # --student replaces the preset's layer-subset options (smoke sets student.ratio)
    res = invoke("distill", "--preset", "smoke", "--student", "config", "--set", f"student.config={path}",
                 "--policy", "fixed-order", "--arms", "all", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["student"]["projections"] == 3 + 2 + 4  # every pair differs in width: vision 96->128, text/mm 64->128
    assert all(e["train"]["lw/vision"] > 0 for e in report["episodes"])
    state = load_file(tmp_path / "o" / "student.safetensors")
    model = open_clip.create_model(f"local-dir:{tmp_path / 'o'}")
    assert set(state) == set(model.state_dict())  # weights only: no projection in the file


def test_bad_images_are_skipped_and_counted_at_the_end_of_a_run(tmp_path: Path) -> None:
    from distillctl.data.shapes import ShapesDataset

    ds = ShapesDataset("val")
    rows = ["filepath,title"]
    for i in range(24):
        ds[i].image.save(tmp_path / f"img{i}.png")
        rows.append(f"img{i}.png,{ds[i].caption}")
    ds[30].image.save(tmp_path / "cut.jpg")
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    rows[3:3] = ["cut.jpg,a small red circle", "gone.png,a large blue square"]  # in the train split
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    res = invoke("distill", "--preset", "smoke", "--data", "csv", "--set", f"data.path={tmp_path / 'train.csv'}",
                 "--batch-size", "4", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 0, res.output
    assert "skipped 2 images (first:" in res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["skipped"]["count"] == 2 and report["steps"] == 6


def test_every_reward_is_recomputed_from_the_recorded_probe_losses(smoke_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    _, report, _ = smoke_run
    key = report["config"]["loss"]["reward_loss"]
    prev = report["initial_probe"][key]
    assert report["episodes"]
    for e in report["episodes"]:
        assert e["probe_loss"] == e["probe"][key]
        assert e["reward"] == pytest.approx((prev - e["probe_loss"]) / prev, rel=1e-12, abs=1e-15)
        prev = e["probe_loss"]
    # burn-in rewards are recorded but never reach the policy
    fed = [r for _, _, r in report["policy_state"]["history"]]
    assert fed == [e["reward"] for e in report["episodes"] if not e["burn_in"]]


def test_burn_in_rewards_are_recorded_but_not_fed_to_the_policy(tmp_path: Path) -> None:
    report = engine.run(smoke_cfg("eval.evaluators=[]", "train.warmup_steps=2", "train.episodes=4"), tmp_path / "o")
    assert [e["burn_in"] for e in report["episodes"]] == [True, False, False, False]
    fed = [r for _, _, r in report["policy_state"]["history"]]
    assert fed == [e["reward"] for e in report["episodes"][1:]]
    # loss.warmup_rewards=true: every reward reaches the policy (v0.1 behaviour)
    report = engine.run(smoke_cfg("eval.evaluators=[]", "train.warmup_steps=2", "train.episodes=2",
                                  "loss.warmup_rewards=true"), tmp_path / "p")
    assert not any(e["burn_in"] for e in report["episodes"])
    assert [r for _, _, r in report["policy_state"]["history"]] == [e["reward"] for e in report["episodes"]]


class _BrokenEvaluator:
    name = "broken"

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        raise RuntimeError("the evaluator's own bug")


def _register_broken(register: Any) -> None:
    register("broken", lambda: _BrokenEvaluator())


def test_an_evaluator_that_raises_after_training_keeps_the_student(tmp_path: Path, use_plugins: Any, plugin: Any) -> None:
    use_plugins(plugin("broken_eval", distribution="distillctl-broken", version="9.9", register_evaluators=_register_broken))
    out = tmp_path / "o"
    res = invoke("distill", "--preset", "smoke", "--out", str(out), "--quiet", "--set", "eval.evaluators=['broken']")
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: evaluation failed after the student was saved"), res.output
    assert "Traceback" not in res.output and "the evaluator's own bug" in lines[0]
    assert (out / "student.safetensors").is_file()  # the trained student survives
    report = json.loads((out / "report.json").read_text())
    assert "the evaluator's own bug" in report["error"] and report["steps"] == 6


def test_a_factory_raising_a_plain_error_is_one_line_naming_the_plugin(tmp_path: Path, use_plugins: Any, plugin: Any) -> None:
    def register_policies(register: Any) -> None:
        def make(*, arms: Any, seed: int) -> Any:
            raise ValueError("window must be even")

        register("odd", make)

    use_plugins(plugin("odd_policy", distribution="distillctl-odd", version="0.2", register_policies=register_policies))
    res = invoke("distill", "--preset", "smoke", "--policy", "odd", "--out", str(tmp_path / "o"), *FAST)
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "distillctl-odd 0.2" in lines[0] and "ValueError: window must be even" in lines[0], res.output
    assert not (tmp_path / "o").exists()  # nothing of value was made, nothing is left
