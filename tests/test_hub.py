"""Sharing a student: ``distillctl export`` (fp16 / bf16 / fp32, or the Hugging Face layout) and ``push``.

The Hub layout is checked by loading it back through open_clip's own ``hf-hub:`` code path, from a
pre-seeded Hugging Face cache, offline, in a fresh process (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from distillctl.cli import app

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished smoke run (fp32 student, report.json with the evaluation)."""
    from distillctl import plugins

    plugins.reset_plugins(plugins.load_plugins(include_entry_points=False))
    out = tmp_path_factory.mktemp("hub") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        res = invoke("distill", "--preset", "smoke", "--out", str(out), "--quiet")
    plugins.reset_plugins(None)
    assert res.exit_code == 0, res.output
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _eval(model: Path) -> dict[str, Any]:
    res = invoke("eval", str(model), "--no-teacher", "--samples", "100", "--evaluators", "retrieval", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_export_halves_the_file_and_loads_in_open_clip(smoke_run: Path, tmp_path: Path, dtype: str) -> None:
    import open_clip
    import torch
    from safetensors.torch import load_file

    out = tmp_path / dtype
    res = invoke("export", str(smoke_run), "--dtype", dtype, "--out", str(out))
    assert res.exit_code == 0, res.output
    fp32, half = smoke_run / "student.safetensors", out / "student.safetensors"
    assert half.stat().st_size <= 0.51 * fp32.stat().st_size
    params = sum(v.numel() for v in load_file(str(fp32)).values())
    assert abs(half.stat().st_size / (params * 2) - 1) < 0.01  # the file is params x 2 bytes (within 1 %)
    # open_clip loads it unchanged (local-dir:), with the student's weights rounded to the dtype
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    want = {k: v.to(getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[dtype])).float() for k, v in load_file(str(fp32)).items()}
    got = model.state_dict()
    assert all(torch.equal(got[k].float(), want[k]) for k in want)
    assert json.loads((out / "open_clip_config.json").read_text()) == json.loads((smoke_run / "open_clip_config.json").read_text())


def test_fp16_student_scores_like_fp32(smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp16"
    assert invoke("export", str(smoke_run), "--dtype", "fp16", "--out", str(out)).exit_code == 0
    full, half = _eval(smoke_run), _eval(out)
    for k in ("i2t_r1", "t2i_r1", "text_retrieval_recall@1", "image_retrieval_recall@1"):
        assert abs(full["student"][k] - half["student"][k]) <= 0.01, (k, full["student"][k], half["student"][k])


def test_export_never_touches_the_finished_student(smoke_run: Path, tmp_path: Path) -> None:
    before = _sha(smoke_run / "student.safetensors")
    res = invoke("export", str(smoke_run), "--dtype", "fp16", "--out", str(smoke_run))
    assert res.exit_code == 2 and "holds the student being exported" in res.output
    res = invoke("export", str(smoke_run), "--dtype", "fp16", "--out", str(smoke_run.parent))
    assert res.exit_code == 2
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    res = invoke("export", str(smoke_run), "--out", str(busy))
    assert res.exit_code == 1 and "is not empty; pass --overwrite" in res.output and (busy / "keep.txt").is_file()
    res = invoke("export", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert res.exit_code == 1 and res.output.strip().splitlines() == [f"error: no such run: {tmp_path / 'nope'}; pass the --out "
                                                                     "folder of a distill run."]
    res = invoke("export", str(smoke_run), "--dtype", "int8", "--out", str(tmp_path / "y"))
    assert res.exit_code == 2 and "expected one of fp32, bf16, fp16" in res.output
    assert _sha(smoke_run / "student.safetensors") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no half-written folder left behind


_LOAD_FROM_HUB_CACHE = r"""
import json, sys
import open_clip, torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
repo, student = sys.argv[1], sys.argv[2]
model, _, preprocess = open_clip.create_model_and_transforms(f"hf-hub:{repo}")
want = load_file(student)
got = model.state_dict()
card = ModelCard.load(sys.argv[3])
tok = open_clip.get_tokenizer(f"hf-hub:{repo}")
print(json.dumps({
    "type": type(model).__name__,
    "equal": sorted(want) == sorted(got) and all(torch.equal(got[k], want[k].to(got[k].dtype)) for k in want),
    "size": preprocess.transforms[0].size,
    "library": card.data.library_name,
    "tokenizer": type(tok).__name__,
}))
"""


def test_hub_layout_loads_back_through_open_clips_hf_hub_path(smoke_run: Path, tmp_path: Path) -> None:
    repo = "distillctl-test/smoke-student"
    hf = tmp_path / "hf"
    res = invoke("export", str(smoke_run), "--hf", "--repo-id", repo, "--out", str(hf))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in hf.iterdir()) == ["README.md", "open_clip_config.json", "open_clip_model.safetensors", "run.toml"]
    # a Hugging Face cache as hf_hub_download leaves it: models--ORG--NAME/{refs/main, snapshots/<rev>/...}
    cache = tmp_path / "cache"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--distillctl-test--smoke-student" / "snapshots" / rev
    shutil.copytree(hf, snapshot)
    (cache / "models--distillctl-test--smoke-student" / "refs").mkdir()
    (cache / "models--distillctl-test--smoke-student" / "refs" / "main").write_text(rev)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _LOAD_FROM_HUB_CACHE, repo, str(smoke_run / "student.safetensors"),
                           str(snapshot / "README.md")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["type"] == "CoCa" and doc["equal"], doc  # the student's own weights, not a random init
    assert doc["size"] == 64 and doc["library"] == "open_clip"
    assert doc["tokenizer"] == "SimpleTokenizer"  # open_clip's CLIP BPE: not the quickstart's words (the card says so)
    # the model card: teacher, sizes, policy, arm pulls, the evaluation table, the command that reproduces the run
    card = (hf / "README.md").read_text()
    report = json.loads((smoke_run / "report.json").read_text())
    assert f"# {repo}" in card and "teacher `quickstart`" in card
    assert f"{report['sizes']['student_params'] / 1e6:.2f}M" in card and f"{report['sizes']['teacher_params'] / 1e6:.2f}M" in card
    assert "policy `optima`, arm set `single`" in card
    for arm in report["arms"]:
        assert f"| {arm['arm']} | {arm['pulls']} |" in card
    assert f"| i2t_r1 | {report['eval']['student']['i2t_r1']:.4g} | {report['eval']['teacher']['i2t_r1']:.4g} |" in card
    assert "distillctl distill --preset run.toml --out runs/smoke-student" in card
    assert "WordTokenizer" in card  # what needs distillctl rather than open_clip
    # distillctl scores the Hub folder as it is
    assert _eval(hf)["student"]["i2t_r1"] == pytest.approx(report["eval"]["student"]["i2t_r1"], abs=1e-6)


def test_push_dry_run_lists_the_files_and_uploads_nothing(smoke_run: Path, tmp_path: Path) -> None:
    res = invoke("push", str(smoke_run), "--repo-id", "distillctl-test/smoke", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["dry_run"] and doc["url"] is None
    assert [f["path"] for f in doc["files"]] == ["README.md", "open_clip_config.json", "open_clip_model.safetensors", "run.toml"]
    weights = next(f for f in doc["files"] if f["path"] == "open_clip_model.safetensors")
    assert weights["bytes"] == pytest.approx((smoke_run / "student.safetensors").stat().st_size, rel=0.001)
    res = invoke("push", str(smoke_run), "--repo-id", "distillctl-test/smoke", "--dry-run", "--dtype", "fp16")
    assert res.exit_code == 0 and "would upload to https://huggingface.co/distillctl-test/smoke (4 files)" in res.output


def test_push_offline_or_with_a_bad_repo_id_is_one_line(smoke_run: Path) -> None:
    res = invoke("push", str(smoke_run), "--repo-id", "distillctl-test/smoke")  # HF_HUB_OFFLINE=1 in every test
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == ["error: cannot push to distillctl-test/smoke: HF_HUB_OFFLINE is set (offline); "
                                               "unset it to upload, or use --dry-run to list the files."]
    res = invoke("push", str(smoke_run), "--repo-id", "not a repo", "--dry-run")
    assert res.exit_code == 2 and "is not a Hugging Face repo id" in res.output


@pytest.mark.slow
def test_quickstart_fp16_student_keeps_its_r1(tmp_path: Path) -> None:
    """The README's figure: the quickstart student exported fp16 scores i2t R@1 within 0.01 of fp32 (test split)."""
    run, half = tmp_path / "q", tmp_path / "q16"
    res = invoke("distill", "--out", str(run), "--quiet", "--set", "eval.teacher=false")
    assert res.exit_code == 0, res.output
    assert invoke("export", str(run), "--dtype", "fp16", "--out", str(half)).exit_code == 0
    assert (half / "student.safetensors").stat().st_size <= 0.51 * (run / "student.safetensors").stat().st_size
    scores = []
    for model in (run, half):
        res = invoke("eval", str(model), "--no-teacher", "--device", "cpu", "--json")
        assert res.exit_code == 0, res.output
        scores.append(json.loads(res.stdout)["student"]["i2t_r1"])
    assert abs(scores[0] - scores[1]) <= 0.01, scores


@pytest.mark.slow
def test_clip_student_loads_whole_through_hf_hub_tokenizer_included(tmp_path: Path) -> None:
    """A student of an open_clip CLIP teacher: model, transforms and tokenizer all come from open_clip's hf-hub path."""
    run, hf = tmp_path / "clip", tmp_path / "hf"
    assert invoke("distill", "--preset", "clip-smoke", "--out", str(run), "--quiet", "--set", "eval.evaluators=[]").exit_code == 0
    res = invoke("export", str(run), "--hf", "--repo-id", "distillctl-test/clip", "--out", str(hf))
    assert res.exit_code == 0 and "distillctl push" in res.output, res.output
    rev = "89abcdef0123456789abcdef0123456789abcdef"
    repo_dir = tmp_path / "cache" / "models--distillctl-test--clip"
    shutil.copytree(hf, repo_dir / "snapshots" / rev)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    script = _LOAD_FROM_HUB_CACHE.replace("print(json.dumps({", "emb = model.encode_text(tok(['a red circle']))\nprint(json.dumps({'text_dim': emb.shape[-1], ")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, "distillctl-test/clip", str(run / "student.safetensors"),
                           str(hf / "README.md")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["type"] == "CLIP" and doc["equal"] and doc["tokenizer"] == "SimpleTokenizer" and doc["text_dim"] > 0
    assert "WordTokenizer" not in (hf / "README.md").read_text()
    assert 'open_clip.get_tokenizer("hf-hub:distillctl-test/clip")' in (hf / "README.md").read_text()
