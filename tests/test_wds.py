"""The ``wds`` source: webdataset tar shards made here with ``tarfile`` (open_clip's layout: one
``.jpg``/``.png`` image and one ``.txt`` caption per key), one corrupt sample among them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("webdataset")

from distillctl.data import SkipItem  # noqa: E402
from distillctl.data.wds import KEY_STRIDE, WdsDataset  # noqa: E402
from distillctl.errors import DataError  # noqa: E402

SHARDS, PER_SHARD = 4, 6
CORRUPT = (1, 2)  # (shard, position): a .jpg whose bytes are not an image


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_shards(root: Path) -> str:
    """``root/shards/0000{0..3}.tar``: 4 shards x 6 samples; returns the brace pattern."""
    (root / "shards").mkdir(parents=True, exist_ok=True)
    colors = ["red", "green", "blue", "yellow", "purple", "orange"]
    for s in range(SHARDS):
        with tarfile.open(root / "shards" / f"{s:05d}.tar", "w") as tar:
            for i in range(PER_SHARD):
                key = f"{s:05d}{i:04d}"
                color = colors[(s + i) % len(colors)]
                if (s, i) == CORRUPT:
                    image, ext = b"this is not a jpeg", "jpg"
                else:
                    buf = io.BytesIO()
                    ext = "png" if i % 2 else "jpg"
                    Image.new("RGB", (32, 32), color).save(buf, format="PNG" if ext == "png" else "JPEG")
                    image = buf.getvalue()
                _add(tar, f"{key}.{ext}", image)
                _add(tar, f"{key}.txt", f"a {color} square".encode())
    return str(root / "shards" / "{00000..00003}.tar")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_shards(tmp_path_factory.mktemp("wds"))


def _indices(ds: WdsDataset, rank: int, world: int, worker: int = 0, workers: int = 1) -> list[int]:
    return [i for i, _ in ds.iter_samples(rank, world, worker, workers, epoch=0)]


def test_splits_count_and_describe(shards: str) -> None:
    train = WdsDataset(shards, split="train")
    assert len(train.shards) == 3 and len(train) == 3 * PER_SHARD and train.estimated  # last shard held out
    assert "estimated" in train.describe()
    assert len(WdsDataset(shards, split="train", samples=1000)) == 1000  # given count wins
    val, test = WdsDataset(shards, split="val"), WdsDataset(shards, split="test")
    assert len(val) == len(test) == PER_SHARD // 2
    assert val[0].caption.startswith("a ") and val[0].image.size == (32, 32)


def test_shards_split_over_ranks_and_workers(shards: str) -> None:
    """No sample is read by two (rank, worker) units within an epoch; together they read every one."""
    ds = WdsDataset(shards, split="all", shuffle_buffer=4)
    units = [_indices(ds, r, 2, w, 2) for r in range(2) for w in range(2)]
    seen = [i for u in units for i in u]
    assert len(seen) == len(set(seen)) == SHARDS * PER_SHARD
    ranks = [set(_indices(ds, r, 2)) for r in range(2)]
    assert not ranks[0] & ranks[1] and len(ranks[0] | ranks[1]) == SHARDS * PER_SHARD
    assert _indices(ds, 0, 2) == _indices(ds, 0, 2)  # deterministic
    assert sorted(_indices(ds, 0, 1)) != _indices(ds, 0, 1)  # the buffer shuffles


def test_corrupt_sample_is_skipped_and_counted(shards: str) -> None:
    from distillctl.data.loader import SkipCounter, make_stream_loader

    ds = WdsDataset(shards, split="all", shuffle_buffer=0)
    bad = CORRUPT[0] * KEY_STRIDE + CORRUPT[1]
    items = dict(ds.iter_samples(0, 1, 0, 1, 0))
    assert isinstance(items[bad], SkipItem) and "undecodable image" in items[bad].reason
    loader = make_stream_loader(ds, lambda im: __import__("torch").zeros(3, 8, 8), None, batch_size=5, steps=5)
    skips = SkipCounter()
    sizes = []
    for batch in loader:
        skips.add(batch.skipped)
        sizes.append(len(batch))
    assert skips.count == 1 and "00001.tar#2" in skips.first
    assert sum(sizes) == 5 * 5 - 1


def test_too_few_shards_for_ranks_and_workers(shards: str) -> None:
    from distillctl.data.loader import make_stream_loader

    ds = WdsDataset(shards, split="train")
    with pytest.raises(DataError, match="cannot be split over 2 rank"):
        make_stream_loader(ds, lambda im: im, None, batch_size=2, rank=0, world_size=2, workers=2)


def test_missing_shard_and_missing_package(shards: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        WdsDataset(str(tmp_path / "{0..3}.tar"))
    monkeypatch.setitem(sys.modules, "webdataset", None)
    with pytest.raises(DataError, match=r"pip install 'distillctl\[wds\]'"):
        WdsDataset(shards)


# --------------------------------------------------------------------------- end to end (slow)
WDS_ARGS = ["--preset", "smoke", "--quiet", "--data", "wds", "--set", "train.threads=1", "--set", "eval.samples=20",
            "--set", "data.shuffle_buffer=8"]


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", DISTILLCTL_DIST_TIMEOUT="30")
    return env


@pytest.mark.slow
def test_distill_on_wds_shards(tmp_path: Path) -> None:
    """Must-hold 7 (1 process): runs; the corrupt sample is skipped and counted in the report."""
    pattern = make_shards(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "distillctl", "distill", *WDS_ARGS, "--set", f"data.path={pattern}",
                           "--out", "run"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["skipped"]["count"] == 1 and "undecodable image" in report["skipped"]["first"]
    assert 48 - 3 <= report["samples"] < 48  # 48 drawn over ~2.7 epochs of 18; the corrupt one dropped each time


@pytest.mark.slow
def test_distill_on_wds_under_torchrun(tmp_path: Path) -> None:
    """Must-hold 7 (2 processes): each rank streams its own shards; the skip is counted once."""
    pattern = make_shards(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "distillctl",
           "distill", *WDS_ARGS, "--batch-size", "4", "--set", f"data.path={pattern}", "--set", "data.val_shards=0",
           "--out", "run"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["distributed"]["world_size"] == 2 and report["distributed"]["global_batch"] == 8
    assert report["skipped"]["count"] == 1


READER = """
import json, os, sys
import torch
from distillctl.data.loader import make_stream_loader
from distillctl.data.wds import WdsDataset
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
ds = WdsDataset(sys.argv[1], split="all", shuffle_buffer=4)
loader = make_stream_loader(ds, lambda im: torch.zeros(3, 4, 4), None, batch_size=3, rank=rank, world_size=world,
                            steps=4, workers=int(sys.argv[3]))
read = [i for b in loader for i in [*b.indices, *(j for j, _ in b.skipped)]]
json.dump(read, open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w"))
"""


@pytest.mark.slow
def test_no_sample_read_by_both_ranks_under_torchrun(tmp_path: Path) -> None:
    """Must-hold 7: the real loader in 2 torchrun processes (with 2 loader workers each: 4 units over
    4 shards): one epoch of every rank's reads, and no sample read by both ranks."""
    pattern = make_shards(tmp_path)
    (tmp_path / "reader.py").write_text(READER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "reader.py", pattern,
           str(tmp_path), "2"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reads = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(len(r) == 4 * 3 == len(set(r)) for r in reads)  # 4 steps x 3 = one epoch of this rank's 2 shards
    assert not set(reads[0]) & set(reads[1])
    assert len(set(reads[0]) | set(reads[1])) == SHARDS * PER_SHARD
