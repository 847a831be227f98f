"""Lose nothing: concurrent runs on one ``--out``, SIGKILL / SIGINT at many points, then ``--resume``.

Every test drives the real console script in subprocesses (CPU, the smoke preset with 4 episodes and
a checkpoint after each). The reference is one uninterrupted run; an interrupted-then-resumed run
must give a bit-identical student (every tensor's bytes, and the metadata) and the same arm and
reward sequence.

Kill points: ``DISTILLCTL_FAULT=save:<n>:<where>`` makes the n-th checkpoint write SIGKILL itself
half-way through the file (``mid-write``) or between the ``last.pt -> prev.pt`` and ``tmp -> last.pt``
renames (``between-renames``); the other kills come from outside, when a checkpoint appears or at
seeded random times. The quick ones run by default; the rest are ``slow``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).with_name("distillctl"))
ARGS = ["distill", "--preset", "smoke", "--episodes", "4", "--set", "train.checkpoint_every=1",
        "--set", "eval.evaluators=[]", "--quiet"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLCTL_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    return env


def _default_sigint() -> None:
    # a user's Ctrl-C: under nohup or a background job SIGINT is inherited as ignored, and Python then never
    # raises KeyboardInterrupt; give the child the default disposition, as an interactive shell does
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: Path, *more: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([EXE, *ARGS, *more, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(**env), preexec_fn=_default_sigint)


def _resume(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "distill", "--resume", "--out", str(out), "--quiet"], capture_output=True, text=True,
                          env=_env(), timeout=300)


def _arms(out: Path) -> list[tuple[str, float]]:
    report = json.loads((out / "report.json").read_text())
    return [(e["arm"], e["reward"]) for e in report["episodes"]]


def _student(path: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every tensor's raw bytes, and the metadata. (Not the file's bytes: safetensors writes its
    metadata table in hash-map order, which differs from process to process.)"""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k).contiguous().view(-1).view(torch.uint8).numpy().tobytes() for k in f.keys()}  # noqa: SIM118
        return tensors, dict(f.metadata())


def _assert_same_run(out: Path, ref: Path, *, clean: bool = True) -> None:
    (a, a_meta), (b, b_meta) = _student(out / "student.safetensors"), _student(ref / "student.safetensors")
    assert sorted(a) == sorted(b) and a_meta == b_meta
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ (first: {differ[:3]}); arms {_arms(out)} vs {_arms(ref)}"
    assert _arms(out) == _arms(ref)
    if clean:  # a finished run drops its resume state
        assert not (out / "checkpoints").exists() and not (out / ".previous").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two identical runs (but for ``eval.samples``, which training never reads) started together on
    one ``--out``: exactly one completes, the other is refused in one line. The winner is the
    uninterrupted reference for the kill tests."""
    out = tmp_path_factory.mktemp("ref") / "run"
    procs = [_start(out, "--set", f"eval.samples={n}") for n in (101, 102)]
    results = [(p.wait(timeout=300), p.stdout.read() if p.stdout else "") for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(text for rc, text in results if rc != 0)
    lines = [ln for ln in loser.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in loser, loser
    assert "in use by another distillctl run" in loser or "already holds a run" in loser, loser
    # one consistent run: run.toml, report and student all from the winner
    from distillctl.config import load_toml

    winner = 101 if results[0][0] == 0 else 102
    report = json.loads((out / "report.json").read_text())
    assert load_toml(out / "run.toml")["eval"]["samples"] == winner == report["config"]["eval"]["samples"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["open_clip_config.json", "report.json", "report.md", "run.toml", "student.safetensors",
         *(["report.html"] if (out / "report.html").exists() else [])])
    return out


def test_two_runs_on_one_out_leave_one_run_and_one_refusal(reference: Path) -> None:
    assert len(_arms(reference)) == 4


def _continue(out: Path) -> subprocess.CompletedProcess[str]:
    """What a user does after a crash: ``--resume`` if there is a checkpoint, else the same command again
    (a folder without a finished run or a checkpoint is not a run, so it is accepted)."""
    from distillctl import checkpoint

    if checkpoint.exists(out / "checkpoints"):
        return _resume(out)
    refused = _resume(out)
    assert refused.returncode == 2 and "nothing to resume" in refused.stderr and "Traceback" not in refused.stderr
    return subprocess.run([EXE, *ARGS, "--out", str(out)], capture_output=True, text=True, env=_env(), timeout=300)


def _killed_then_resumed(tmp_path: Path, reference: Path, **fault: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "run"
    proc = _start(out, **fault)
    assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stdout.read() if proc.stdout else ""
    resumed = _continue(out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_same_run(out, reference)
    return resumed


def test_sigkill_during_a_checkpoint_write_then_resume_is_bit_identical(tmp_path: Path, reference: Path) -> None:
    _killed_then_resumed(tmp_path, reference, DISTILLCTL_FAULT="save:2:mid-write")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["save:1:mid-write", "save:3:mid-write", "save:2:between-renames",
                                   "save:3:between-renames"])
def test_sigkill_inside_checkpoint_writes(tmp_path: Path, reference: Path, fault: str) -> None:
    _killed_then_resumed(tmp_path, reference, DISTILLCTL_FAULT=fault)


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "run"
    proc = _start(out, DISTILLCTL_FAULT="save:3:mid-write")
    assert proc.wait(timeout=300) == -signal.SIGKILL
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:-100])  # the newest complete checkpoint is now damaged too
    resumed = _resume(out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "prev.pt" in resumed.stdout + resumed.stderr
    _assert_same_run(out, reference)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the run ended before the point to interrupt it"
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_after_a_checkpoint(tmp_path: Path, reference: Path, sig: int) -> None:
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for(out / "checkpoints" / "last.pt", proc)  # the first checkpoint is written: three episodes still to run
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    text = proc.stdout.read() if proc.stdout else ""
    assert rc != 0 and "Traceback" not in text, text
    if sig == signal.SIGINT:
        assert "--resume" in text  # says how to continue
    resumed = _resume(out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_same_run(out, reference)


@pytest.mark.slow
def test_killed_before_the_first_checkpoint_the_same_command_runs_again(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for(out / "run.toml", proc)
    proc.kill()
    proc.wait()
    assert sorted(p.name for p in out.iterdir() if p.name != ".distillctl.lock") in (["run.toml"], ["checkpoints", "run.toml"])
    again = _continue(out)
    assert again.returncode == 0, again.stdout + again.stderr
    _assert_same_run(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_times(tmp_path: Path, reference: Path, seed: int) -> None:
    """Seeded random kill times across the whole run (start-up, training, checkpoints, export), then resume.

    A kill that comes too late (the run already wrote its report) exercises no resume: that run is checked
    against the reference, and the kill is retried at a seeded fraction of the time this machine took, so
    the test never passes without resuming a killed run."""
    rng = random.Random(seed)
    delay = rng.uniform(4.0, 14.0)
    for attempt in range(4):
        out = tmp_path / f"run{attempt}"
        t0 = time.monotonic()
        proc = _start(out)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        elapsed = time.monotonic() - t0
        if not (out / "report.json").exists():
            break  # killed before the end: what this test is for
        _assert_same_run(out, reference, clean=False)  # finished (perhaps killed while dropping checkpoints/)
        delay = rng.uniform(0.2, 0.8) * elapsed  # kill earlier next time, inside this machine's run time
    else:
        pytest.fail(f"every run finished before its kill (last delay {delay:.1f} s): nothing was resumed")
    resumed = _continue(out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_same_run(out, reference)


# ----------------------------------------------------------------------------- resume with a dropout student
class _Crash(BaseException):
    """Stands in for a kill (a BaseException: nothing on the way may swallow it)."""


def test_resume_is_bit_exact_for_a_student_with_dropout(tmp_path: Path, use_plugins: object, plugin: object) -> None:
    """Dropout draws from the global torch RNG on every training forward: a resumed run is bit-exact only
    if the RNG state is restored after everything that draws from it at start-up (the data loader's
    iterator included), and checkpointed with everything else."""
    import torch

    from distillctl import engine
    from distillctl.cli.distill_cmd import build_config

    def dropout_subset(teacher: object, splitter: object, p: float = 0.3) -> object:
        """layer-subset with dropout on the pooled vision tokens (shapes unchanged, nothing in the state dict)."""
        from distillctl.default_plugins.students import layer_subset

        student = layer_subset(teacher=teacher, splitter=splitter, ratio=0.5)

        def drop(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.dropout(out, p, training=module.training)

        student.model.visual.ln_post.register_forward_hook(drop)
        return student

    use_plugins(plugin("dropout", register_students=lambda register: register("dropout-subset", dropout_subset)))
    cfg, _ = build_config("smoke", {"student": {"name": "dropout-subset"}},
                          ["eval.evaluators=[]", "train.episodes=3", "train.episode_steps=1", "train.batch_size=4",
                           "train.checkpoint_every=1"])
    straight = engine.run(cfg, tmp_path / "straight")

    def crash_after_episode_2(kind: str, payload: dict) -> None:  # before its checkpoint: resume from episode 1
        if kind == "episode" and payload["episode"] == 2:
            raise _Crash

    with pytest.raises(_Crash):
        engine.run(cfg, tmp_path / "crashed", on_event=crash_after_episode_2)
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = engine.run(cfg, tmp_path / "crashed", resume=True)
    assert [(e["arm"], e["reward"]) for e in resumed["episodes"]] == [(e["arm"], e["reward"]) for e in straight["episodes"]]
    assert _student(tmp_path / "crashed" / "student.safetensors")[0] == _student(tmp_path / "straight" / "student.safetensors")[0]
