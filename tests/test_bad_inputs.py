"""Bad input through the real CLI: never a traceback, a few lines naming the problem, nothing lost.

Each case builds its bad input in a temporary folder and runs ``distillctl distill`` (or ``presets
validate``) through the Typer app. For every case: a non-zero exit, no ``Traceback``, at most three
lines of output, a line naming the problem, and the existing ``--out`` (a finished run, replaced
with ``--overwrite`` where the case allows it) unchanged byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distillctl.cli import app

SMOKE = ("--preset", "smoke", "--quiet", "--set", "eval.evaluators=[]")


@dataclass
class Case:
    id: str
    expect: str  # a substring of the error output that names the problem
    args: Callable[[Path, Path], list[str]]  # (tmp, out) -> arguments after "distill" (or a full command)
    out: str = "finished+overwrite"  # what --out holds: finished+overwrite | finished | none | custom
    command: str = "distill"
    max_lines: int = 3  # a config error prints a header + one line per problem


# ----------------------------------------------------------------------------- builders
def _png(path: Path, ok: bool = True) -> Path:
    if ok:
        from PIL import Image

        Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return path


def _csv(tmp: Path, text: str, name: str = "d.csv") -> str:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _coco(tmp: Path, *, images_beside: bool) -> str:
    ann = tmp / "ann" / "captions_mine.json"
    ann.parent.mkdir()
    doc = {"images": [{"id": i, "file_name": f"{i:06d}.png"} for i in range(12)],
           "annotations": [{"image_id": i, "caption": f"a red square {i}"} for i in range(12)]}
    ann.write_text(json.dumps(doc))
    pics = tmp / "pics"
    pics.mkdir()
    for i in range(12):
        _png(pics / f"{i:06d}.png")
    return str(ann)


def _bundled_state() -> dict:
    from safetensors.torch import load_file

    from distillctl.quickstart import WEIGHTS_FILE

    return load_file(str(WEIGHTS_FILE))


def _weights_wrong_shape(tmp: Path) -> str:
    from safetensors.torch import save_file

    sd = _bundled_state()
    sd["visual.class_embedding"] = sd["visual.class_embedding"][:64].contiguous()  # same keys, one wrong shape
    save_file(sd, str(tmp / "w.safetensors"))
    return str(tmp / "w.safetensors")


def _weights_missing_key(tmp: Path) -> str:
    import torch

    sd = _bundled_state()
    sd.pop("logit_scale")
    torch.save(sd, tmp / "w.pt")
    return str(tmp / "w.pt")


def _weights_pickle(tmp: Path) -> str:
    import pickle

    (tmp / "w.pt").write_bytes(pickle.dumps({"a": object.__new__(Case)}))
    return str(tmp / "w.pt")


def _resumable(tmp: Path, out: Path, damage: str) -> list[str]:
    """An unfinished run in ``out``: run.toml + a checkpoint damaged in the named way."""
    import torch

    from distillctl import checkpoint
    from distillctl.config import dumps_toml, validate
    from distillctl.presets import load_preset

    out.mkdir(parents=True, exist_ok=True)
    cfg = validate(load_preset("smoke"))
    cfg["eval"]["evaluators"] = []
    (out / "run.toml").write_text(dumps_toml(cfg))
    ck = out / "checkpoints"
    if damage == "none":
        return ["--resume", "--out", str(out), "--quiet"]
    checkpoint.save(ck, {"student": {"w": torch.zeros(3)}}, fingerprint="0" * 64)
    last = ck / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "junk":
        last.write_bytes(b"this is not a checkpoint at all")
    elif damage == "legacy":
        torch.save({"student": {}}, last)  # an old-format / foreign torch file
    elif damage == "toml":
        (out / "run.toml").write_text("[train\nlr = ")
    elif damage == "toml-latin1":
        (out / "run.toml").write_bytes("# caf\xe9\n[train]\n".encode("latin-1"))
    elif damage == "toml-invalid":
        (out / "run.toml").write_text('[train]\nlr = -1.0\n[teacher]\nname = "quickstart"\n')
    # "foreign": valid file, fingerprint of no real run
    return ["--resume", "--out", str(out), "--quiet"]


def _finished_run(out: Path) -> None:
    from distillctl.config import dumps_toml, validate
    from distillctl.presets import load_preset

    out.mkdir(parents=True, exist_ok=True)
    for name in ("student.safetensors", "report.json", "report.md", "open_clip_config.json"):
        (out / name).write_text(f"previous {name}")
    (out / "run.toml").write_text(dumps_toml(validate(load_preset("smoke"))))


def _hash_tree(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".distillctl.lock"}


def S(*kv: str) -> Callable[[Path, Path], list[str]]:  # noqa: N802 - reads like the flag
    """``--set`` overrides on the smoke preset."""
    return lambda tmp, out: [*SMOKE, *(x for k in kv for x in ("--set", k))]


def F(*flags: str) -> Callable[[Path, Path], list[str]]:  # noqa: N802
    return lambda tmp, out: [*SMOKE, *flags]


# ----------------------------------------------------------------------------- the cases
CASES = [
    # numbers (range checks; each one crashed inside torch or failed late under another name)
    Case("lr-negative", "train.lr: must be greater than 0", F("--lr", "-1")),
    Case("lr-nan", "train.lr: must be a finite number", F("--lr", "nan")),
    Case("lr-inf", "train.lr: must be a finite number", S("train.lr=inf")),
    Case("lr-zero", "train.lr: must be greater than 0", S("train.lr=0")),
    Case("threads-negative", "train.threads: must be at least 0", S("train.threads=-1")),
    Case("probe-batch-size-negative", "train.probe_batch_size: must be at least 0", S("train.probe_batch_size=-3")),
    Case("temperature-zero", "loss.temperature: must be greater than 0", S("loss.temperature=0")),
    Case("temperature-nan", "loss.temperature: must be a finite number", S("loss.temperature=nan")),
    Case("min-lr-ratio", "train.min_lr_ratio: must be between 0 and 1", S("train.min_lr_ratio=1.5")),
    Case("grad-clip-negative", "train.grad_clip: must be at least 0", S("train.grad_clip=-1")),
    Case("weight-decay-negative", "train.weight_decay: must be at least 0", S("train.weight_decay=-0.1")),
    Case("warmup-negative", "train.warmup_steps: must be at least 0", S("train.warmup_steps=-5")),
    Case("seed-negative", "train.seed: must be between 0 and", F("--seed", "-1")),
    Case("checkpoint-every-negative", "train.checkpoint_every: must be at least 0", S("train.checkpoint_every=-1")),
    Case("w-lw-negative", "loss.w_lw: must be at least 0", S("loss.w_lw=-1")),
    Case("workers-negative", "data.workers: must be at least 0", S("data.workers=-2")),
    Case("eval-samples-zero", "eval.samples: must be at least 1", S("eval.samples=0")),
    Case("episodes-zero", "train.episodes: must be at least 1", F("--episodes", "0")),
    Case("batch-size-zero", "train.batch_size: must be at least 1", F("--batch-size", "0")),
    Case("steps-zero", "--steps must be at least 1", F("--steps", "0")),
    Case("several-at-once", "invalid config (3 problems)", S("train.lr=-1", "train.threads=-1", "loss.temperature=0"),
         max_lines=4),
    # config syntax, types, keys
    Case("set-no-equals", "expected section.key=value", S("train.lr")),
    Case("set-no-section", "expected section.key=value", S("lr=1")),
    Case("unknown-key", "train.bogus: unknown key", S("train.bogus=1")),
    Case("unknown-section", "trainer: unknown section", S("trainer.lr=1")),
    Case("wrong-type", "train.lr: expected number", S("train.lr=fast")),
    Case("bool-for-int", "train.episodes: expected integer", S("train.episodes=true")),
    Case("device-choice", "train.device: expected one of", S("train.device=tpu")),
    Case("precision-choice", "train.precision: expected one of", F("--precision", "fp8")),
    Case("export-dtype-choice", "export.dtype: expected one of", F("--export-dtype", "int8")),
    Case("arms-choice", "policy.arms: expected one of", F("--arms", "pairs")),
    Case("steps-and-episodes", "--steps and --episodes", F("--steps", "3", "--episodes", "2")),
    Case("resume-with-flags", "--resume takes only --out", lambda tmp, out: ["--resume", "--out", str(out), "--lr", "0.1"]),
    # preset files
    Case("preset-missing-file", "nosuch.toml", lambda tmp, out: ["--preset", str(tmp / "nosuch.toml"), "--quiet"]),
    Case("preset-unknown-name", "nosuchpreset", lambda tmp, out: ["--preset", "nosuchpreset", "--quiet"]),
    Case("preset-not-toml", "not valid TOML",
         lambda tmp, out: ["--preset", _csv(tmp, "[train\nlr = ", "p.toml"), "--quiet"]),
    Case("preset-not-utf8", "not a UTF-8 text file",
         lambda tmp, out: ["--preset", _latin1(tmp), "--quiet"]),
    Case("preset-bad-value", "train.lr: must be greater than 0",
         lambda tmp, out: ["--preset", _csv(tmp, '[teacher]\nname = "quickstart"\n[train]\nlr = -1.0\n', "p.toml"),
                           "--quiet"]),
    Case("presets-validate-bad", "train.threads: must be at least 0",
         lambda tmp, out: ["validate", "smoke", "--set", "train.threads=-1"], out="none", command="presets"),
    # names
    Case("teacher-unknown", "nosuchteacher", F("--teacher", "nosuchteacher")),
    Case("student-unknown", "nosuchstudent", F("--student", "nosuchstudent")),
    Case("policy-unknown", "nosuchpolicy", F("--policy", "nosuchpolicy")),
    Case("data-unknown", "nosuchdata", F("--data", "nosuchdata")),
    Case("splitter-unknown", "nosuchsplitter", S("splitter.name=nosuchsplitter")),
    Case("student-option-unknown", "student.bogus", S("student.bogus=1")),
    # teacher weights
    Case("weights-missing-file", "not found", lambda tmp, out: [*SMOKE, "--teacher-weights", str(tmp / "no.safetensors")]),
    Case("weights-not-safetensors", "safetensors",
         lambda tmp, out: [*SMOKE, "--teacher-weights", _csv(tmp, "junk", "w.safetensors")]),
    Case("weights-wrong-shape", "shape mismatch", lambda tmp, out: [*SMOKE, "--teacher-weights", _weights_wrong_shape(tmp)]),
    Case("weights-missing-key", "missing: logit_scale",
         lambda tmp, out: [*SMOKE, "--teacher-weights", _weights_missing_key(tmp)]),
    Case("weights-pickle", "weights_only", lambda tmp, out: [*SMOKE, "--teacher-weights", _weights_pickle(tmp)]),
    Case("weights-empty-dir", "no weights file", lambda tmp, out: [*SMOKE, "--teacher-weights", _mkdir(tmp / "empty")]),
    Case("weights-local-dir-missing", "folder not found",
         lambda tmp, out: [*SMOKE, "--teacher-weights", f"local-dir:{tmp / 'nodir'}"]),
    # data files
    Case("csv-missing", "CSV file not found", lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={tmp / 'x.csv'}"]),
    Case("csv-empty", "empty file", lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv(tmp, '')}"]),
    Case("csv-no-column", "no column 'title'",
         lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv(tmp, 'filepath,caption' + chr(10) + 'a.png,x' + chr(10))}"]),
    Case("csv-not-utf8", "not a UTF-8 text file", lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_latin1(tmp, 'd.csv')}"]),
    Case("csv-huge-field", "no usable item",
         lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv(tmp, 'filepath,title' + chr(10) + 'a.png,' + 'x' * 200_000 + chr(10))}"]),
    Case("csv-field-over-limit", "not readable as CSV",
         lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv(tmp, 'filepath,title' + chr(10) + 'a.png,' + 'x' * (17 * 2**20) + chr(10))}"]),
    Case("csv-images-missing", "missing file", lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv_rows(tmp, images=False)}"]),
    Case("images-corrupt", "unreadable image", lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv_rows(tmp, corrupt=True)}"]),
    Case("captions-empty", "empty caption", lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv_rows(tmp, caption='')}"]),
    Case("csv-bad-separator", "unknown CSV separator",
         lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv_rows(tmp)}", "--set", "data.separator=x"]),
    Case("batch-larger-than-data", "batch size 8",
         lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv_rows(tmp, n=4)}"]),
    Case("val-fraction", "val_fraction", lambda tmp, out: [*SMOKE, "--data", "csv", "--set", f"data.path={_csv_rows(tmp)}", "--set", "data.val_fraction=1.5"]),
    Case("coco-not-json", "not JSON", lambda tmp, out: [*SMOKE, "--data", "coco", "--set", f"data.path={_csv(tmp, '{nope', 'c.json')}"]),
    Case("coco-images-not-beside", "--set data.images=DIR",
         lambda tmp, out: [*SMOKE, "--data", "coco", "--set", f"data.path={_coco(tmp, images_beside=False)}"]),
    Case("coco-images-dir-missing", "COCO image folder not found",
         lambda tmp, out: [*SMOKE, "--data", "coco", "--set", f"data.path={_coco(tmp, images_beside=False)}",
                           "--set", f"data.images={tmp / 'nope'}"]),
    Case("folder-missing", "image folder not found", lambda tmp, out: [*SMOKE, "--data", "folder", "--set", f"data.path={tmp / 'nofolder'}"]),
    Case("folder-empty", "no items", lambda tmp, out: [*SMOKE, "--data", "folder", "--set", f"data.path={_mkdir(tmp / 'emptyf')}"]),
    # checkpoints (--resume)
    Case("resume-nothing", "nothing to resume", lambda tmp, out: ["--resume", "--out", str(tmp / "nothing")], out="none"),
    Case("resume-no-checkpoint", "no checkpoint", lambda tmp, out: _resumable(tmp, out, "none"), out="custom"),
    Case("resume-truncated", "truncated", lambda tmp, out: _resumable(tmp, out, "truncated"), out="custom"),
    Case("resume-not-a-checkpoint", "not a distillctl checkpoint", lambda tmp, out: _resumable(tmp, out, "junk"), out="custom"),
    Case("resume-legacy-file", "not a distillctl checkpoint", lambda tmp, out: _resumable(tmp, out, "legacy"), out="custom"),
    Case("resume-other-architecture", "fingerprint differs", lambda tmp, out: _resumable(tmp, out, "foreign"), out="custom"),
    Case("resume-run-toml-broken", "not valid TOML", lambda tmp, out: _resumable(tmp, out, "toml"), out="custom"),
    Case("resume-run-toml-latin1", "not a UTF-8 text file", lambda tmp, out: _resumable(tmp, out, "toml-latin1"), out="custom"),
    Case("resume-run-toml-invalid", "train.lr: must be greater than 0", lambda tmp, out: _resumable(tmp, out, "toml-invalid"), out="custom"),
    Case("resume-finished-run", "nothing to resume", lambda tmp, out: ["--resume", "--out", str(out)], out="finished"),
    Case("resume-and-overwrite", "--resume takes only --out", lambda tmp, out: ["--resume", "--overwrite", "--out", str(out)], out="finished"),
    # --out
    Case("out-holds-a-run", "already holds a run", lambda tmp, out: [*SMOKE], out="finished"),
    Case("out-holds-an-unfinished-run", "holds an unfinished run", lambda tmp, out: [*SMOKE, *_unfinished(out)], out="custom"),
    Case("out-is-a-file", "is a file, not a folder", lambda tmp, out: [*SMOKE, "--out", _csv(tmp, "x", "file")], out="none"),
    Case("out-under-a-file", "is a file, not a folder", lambda tmp, out: [*SMOKE, "--out", str(Path(_csv(tmp, "x", "file")) / "run")], out="none"),
    Case("out-unwritable", "cannot be written", lambda tmp, out: [*SMOKE, "--out", "/proc/self/distillctl-run"], out="none"),
    Case("out-in-use", "in use by another distillctl run", lambda tmp, out: [*SMOKE, "--overwrite", *_locked(out)], out="custom"),
]


def _latin1(tmp: Path, name: str = "p.toml") -> str:
    p = tmp / name
    p.write_bytes('# caf\xe9\n[teacher]\nname = "quickstart"\nfilepath,title\n'.encode("latin-1"))
    return str(p)


def _mkdir(p: Path) -> str:
    p.mkdir(parents=True, exist_ok=True)
    return str(p)


def _csv_rows(tmp: Path, *, n: int = 24, images: bool = True, corrupt: bool = False, caption: str = "a red square") -> str:
    rows = ["filepath,title"]
    for i in range(n):
        name = f"img{i}.png"
        if images:
            _png(tmp / name, ok=not corrupt)
        rows.append(f"{name},{caption}")
    return _csv(tmp, "\n".join(rows) + "\n")


def _unfinished(out: Path) -> list[str]:
    import torch

    from distillctl import checkpoint

    out.mkdir(parents=True, exist_ok=True)
    (out / "run.toml").write_text("[teacher]\n")
    checkpoint.save(out / "checkpoints", {"w": torch.zeros(1)}, fingerprint="f")
    return []


_HELD: list[int] = []


def _locked(out: Path) -> list[str]:
    import fcntl

    _finished_run(out)
    fd = os.open(out / ".distillctl.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    _HELD.append(fd)
    return []


def test_there_are_at_least_sixty_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_a_few_lines_and_loses_nothing(case: Case, tmp_path: Path) -> None:
    tmp, out = tmp_path / "in", tmp_path / "out"
    tmp.mkdir()
    if case.out.startswith("finished"):
        _finished_run(out)
    args = case.args(tmp, out)
    if case.command == "distill" and "--out" not in args:
        args += ["--out", str(out)]
        if case.out == "finished+overwrite":
            args.append("--overwrite")  # the old run must survive a new run that fails
    before = _hash_tree(out)
    try:
        result = CliRunner().invoke(app, [case.command, *args])
    finally:
        while _HELD:
            os.close(_HELD.pop())
    text = result.output
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert result.exit_code != 0, text
    assert result.exc_info is None or result.exc_info[0] is SystemExit, f"unhandled {result.exc_info}\n{text}"
    assert "Traceback" not in text, text
    assert 1 <= len(lines) <= case.max_lines, text
    assert case.expect in text, text
    assert "checkpoint kept" not in text, text  # no advice to resume what cannot be resumed
    assert _hash_tree(out) == before, "the existing --out changed"


def test_a_full_disk_is_one_line_before_any_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from distillctl import engine

    def no_models(*a: object, **k: object) -> None:
        raise AssertionError("a model was built")

    monkeypatch.setattr(engine, "build_models", no_models)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, ["distill", *SMOKE, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "MiB free" in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
