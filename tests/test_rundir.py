"""``RunDir``: preflight classification, the lock, and the cleanup rule (no models, milliseconds)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from distillctl import checkpoint
from distillctl.rundir import LOCK_NAME, PREVIOUS, RunDir, RunDirError


def _finished(out: Path, tag: str = "old") -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("student.safetensors", "report.json", "report.md", "run.toml", "open_clip_config.json"):
        (out / name).write_text(f"{tag} {name}")


def _ckpt(out: Path) -> None:
    import torch

    checkpoint.save(out / "checkpoints", {"x": torch.zeros(2)}, fingerprint="f")


def _tree(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text(errors="replace") for p in sorted(out.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- preflight
def test_preflight_classifies_folders(tmp_path: Path) -> None:
    RunDir(tmp_path / "new").preflight()  # nothing there: fine, and nothing is created
    assert not (tmp_path / "new").exists()
    only_toml = tmp_path / "killed-early"
    only_toml.mkdir()
    (only_toml / "run.toml").write_text("[train]\n")
    RunDir(only_toml).preflight()  # a run.toml alone is not a run
    with pytest.raises(RunDirError, match="nothing to resume .* no checkpoint"):
        RunDir(only_toml, resume=True).preflight()
    done = tmp_path / "done"
    _finished(done)
    with pytest.raises(RunDirError, match="already holds a run; pass --overwrite"):
        RunDir(done).preflight()
    with pytest.raises(RunDirError, match="finished run: nothing to resume"):
        RunDir(done, resume=True).preflight()
    RunDir(done, overwrite=True).preflight()
    half = tmp_path / "half"
    _ckpt(half)
    with pytest.raises(RunDirError, match="holds an unfinished run; pass --resume"):
        RunDir(half).preflight()
    RunDir(half, resume=True).preflight()
    RunDir(half, overwrite=True).preflight()
    (half / "student.safetensors").write_text("exported, then killed before the report")
    RunDir(half, resume=True).preflight()  # still resumable
    (half / "report.json").write_text("{}")
    with pytest.raises(RunDirError, match="finished run: nothing to resume"):
        RunDir(half, resume=True).preflight()


def test_preflight_unusable_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        RunDir(f).preflight()
    with pytest.raises(RunDirError, match=r"cannot be created: .*file is a file"):
        RunDir(f / "a" / "b").preflight()
    if os.path.isdir("/proc/self"):
        with pytest.raises(RunDirError, match="cannot be written"):
            RunDir(Path("/proc/self/distillctl-out")).preflight()

    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1024))  # type: ignore[attr-defined]
    with pytest.raises(RunDirError, match="MiB free"):
        RunDir(tmp_path / "x").preflight()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probes left nothing


# ----------------------------------------------------------------------------- lock
def test_second_session_is_refused_naming_the_pid(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with RunDir(out).session():
        with pytest.raises(RunDirError, match=rf"in use by another distillctl run \(pid {os.getpid()}\)"):
            RunDir(out).preflight()
        with pytest.raises(RunDirError, match="in use"), RunDir(out).session():
            pass
        (out / "report.json").write_text("{}")
    assert not (out / LOCK_NAME).exists()


def test_a_killed_holder_does_not_leave_the_folder_stuck(tmp_path: Path) -> None:
    out = tmp_path / "o"
    code = ("import sys, time; from pathlib import Path; from distillctl.rundir import RunDir\n"
            f"cm = RunDir(Path({str(out)!r})).session(); cm.__enter__(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"pid {proc.pid}"):
            RunDir(out).preflight()
    finally:
        proc.kill()
        proc.wait()
    assert (out / LOCK_NAME).exists()  # the file is left behind, the lock is not
    with RunDir(out).session():
        pass


# ----------------------------------------------------------------------------- cleanup rule
def test_failure_removes_a_folder_it_created_but_keeps_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with pytest.raises(RuntimeError), RunDir(out).session():
        (out / "run.toml").write_text("x")
        raise RuntimeError("boom")
    assert not out.exists()
    with pytest.raises(KeyboardInterrupt), RunDir(out).session() as rd:
        (out / "run.toml").write_text("x")
        _ckpt(out)
        (out / "student.safetensors").write_text("half")
        assert rd.checkpoint_dir == out / "checkpoints"
        raise KeyboardInterrupt
    assert sorted(_tree(out)) == ["checkpoints/last.pt", "run.toml"]


def test_failure_in_an_existing_folder_removes_only_its_files(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError), RunDir(out).session():
        (out / "run.toml").write_text("x")
        (out / "student.safetensors").write_text("x")
        raise RuntimeError
    assert _tree(out) == {"notes.txt": "mine"}


def test_failure_after_export_removes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with pytest.raises(RuntimeError), RunDir(out).session() as rd:
        _finished(out, "new")
        rd.mark_exported()
        raise RuntimeError("eval failed")
    assert _tree(out)["student.safetensors"] == "new student.safetensors"


def test_overwrite_replaces_only_after_success(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _finished(out)
    before = _tree(out)
    with pytest.raises(RuntimeError), RunDir(out, overwrite=True).session():
        assert _tree(out) != before and (out / PREVIOUS).is_dir()  # moved aside, not deleted
        (out / "run.toml").write_text("new")
        raise RuntimeError("typo in a data path")
    assert _tree(out) == before  # restored
    with RunDir(out, overwrite=True).session():
        _finished(out, "new")
    assert _tree(out)["report.json"] == "new report.json" and not (out / PREVIOUS).exists()


def test_overwrite_failure_with_a_checkpoint_keeps_the_old_run_aside_until_resume_ends(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _finished(out)
    before = _tree(out)
    with pytest.raises(RuntimeError), RunDir(out, overwrite=True).session():
        (out / "run.toml").write_text("new")
        _ckpt(out)
        raise RuntimeError
    with pytest.raises(RunDirError, match="unfinished run"):
        RunDir(out).preflight()
    assert (out / PREVIOUS / "report.json").read_text() == before["report.json"]
    with RunDir(out, resume=True).session():
        _finished(out, "new")
    assert not (out / PREVIOUS).exists() and _tree(out)["report.json"] == "new report.json"


def test_a_killed_overwrite_is_repaired_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _finished(out)
    before = _tree(out)
    # killed right after moving the old run aside: it comes back on the next session
    code = ("import os; from pathlib import Path; from distillctl.rundir import RunDir\n"
            f"cm = RunDir(Path({str(out)!r}), overwrite=True).session(); cm.__enter__()\n"
            f"Path({str(out)!r}, 'run.toml').write_text('new'); os._exit(9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (out / PREVIOUS).is_dir()
    with pytest.raises(RunDirError, match="already holds a run"):
        RunDir(out).preflight()  # the run aside still counts
    with pytest.raises(RunDirError, match="already holds a run"), RunDir(out).session():
        pass
    assert {k: v for k, v in _tree(out).items() if k != LOCK_NAME} == before


def test_lock_is_released_quickly(tmp_path: Path) -> None:
    out = tmp_path / "o"
    t0 = time.perf_counter()
    for _ in range(20):
        with RunDir(out).session():
            (out / "report.json").write_text("{}")
        (out / "report.json").unlink()
    assert time.perf_counter() - t0 < 30  # generous: only catches a lock that waits


# ----------------------------------------------------------------------------- refused runs change nothing
def _snapshot(out: Path) -> dict[str, bytes | None]:
    """Every path under ``out`` (hidden ones included), with the bytes of the files."""
    return {str(p.relative_to(out)): (p.read_bytes() if p.is_file() else None) for p in sorted(out.rglob("*"))}


def _killed_run_folder(out: Path, *, checkpointed: bool) -> None:
    """What a SIGKILLed run leaves: run.toml, perhaps a checkpoint, and its lock file (nobody holds it)."""
    out.mkdir(parents=True)
    (out / "run.toml").write_text("[teacher]\nname = 'quickstart'\n")
    (out / LOCK_NAME).write_text("12345\n")
    if checkpointed:
        _ckpt(out)


def test_stale_lock_of_a_killed_run_is_removed_by_preflight(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _killed_run_folder(out, checkpointed=True)
    RunDir(out, resume=True).preflight()
    assert not (out / LOCK_NAME).exists()
    assert sorted(_tree(out)) == ["checkpoints/last.pt", "run.toml"]


@pytest.mark.parametrize(
    ("prepare", "args", "message"),
    [
        (lambda out: _killed_run_folder(out, checkpointed=False), ["--resume"], "nothing to resume"),
        (lambda out: (out.mkdir(), (out / "report.json").write_text("{}")), ["--resume"], "holds a finished run"),
        (lambda out: (out.mkdir(), (out / "report.json").write_text("{}"), (out / LOCK_NAME).write_text("")),
         ["--preset", "smoke"], "already holds a run"),
        (lambda out: _killed_run_folder(out, checkpointed=True), ["--preset", "smoke"], "holds an unfinished run"),
    ],
)
def test_a_refused_run_leaves_the_folder_as_the_user_had_it(tmp_path: Path, prepare: Any, args: list[str],
                                                           message: str) -> None:
    from typer.testing import CliRunner

    from distillctl.cli import app

    out = tmp_path / "o"
    prepare(out)
    before = {k: v for k, v in _snapshot(out).items() if k != LOCK_NAME}  # a killed run's lock file is not the user's
    result = CliRunner().invoke(app, ["distill", *args, "--out", str(out)])
    assert result.exit_code != 0 and message in result.stderr, result.output
    assert _snapshot(out) == before  # nothing added (no lock file), nothing removed, nothing changed


def test_a_run_refused_inside_its_session_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _killed_run_folder(out, checkpointed=True)
    (out / LOCK_NAME).unlink()
    before = _snapshot(out)
    with pytest.raises(RunDirError, match="refused"), RunDir(out, resume=True).session():
        raise RunDirError("refused: the checkpoint belongs to another configuration")  # what restore_or_start raises
    assert _snapshot(out) == before
