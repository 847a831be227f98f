"""Checkpoints: checksum, fingerprint, rotation and fallback (tiny tensors, milliseconds)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distillctl import checkpoint
from distillctl.checkpoint import CheckpointError


def _blob(v: float) -> dict:
    return {"student": {"w": torch.full((3, 2), v)}, "loop": '{"episode": 1}'}


def _cfg(**train: object) -> dict:
    return {"train": {"lr": 1e-3, "device": "cpu", **train}, "eval": {"samples": 10}}


def test_roundtrip_rotation_and_fallback(tmp_path: Path) -> None:
    d = tmp_path / "ck"
    assert not checkpoint.exists(d)
    checkpoint.save(d, _blob(1.0), fingerprint="fp")
    checkpoint.save(d, _blob(2.0), fingerprint="fp")
    assert sorted(p.name for p in d.iterdir()) == ["last.pt", "prev.pt"] and checkpoint.exists(d)
    blob, note = checkpoint.load(d, fingerprint="fp")
    assert note is None and blob["student"]["w"][0, 0] == 2.0 and blob["loop"] == '{"episode": 1}'
    # the newest file is truncated: the previous one is used, with a message
    data = (d / "last.pt").read_bytes()
    (d / "last.pt").write_bytes(data[: len(data) // 2])
    blob, note = checkpoint.load(d, fingerprint="fp")
    assert blob["student"]["w"][0, 0] == 1.0
    assert note is not None and "truncated" in note and "prev.pt" in note and "\n" not in note
    # a flipped byte in the payload: checksum mismatch, found before unpickling
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    (d / "last.pt").write_bytes(bytes(flipped))
    _, note = checkpoint.load(d, fingerprint="fp")
    assert note is not None and "checksum mismatch" in note


def test_no_usable_checkpoint_is_one_line(tmp_path: Path) -> None:
    d = tmp_path / "ck"
    d.mkdir()
    (d / "last.pt").write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(CheckpointError, match="not a distillctl checkpoint") as exc:
        checkpoint.load(d, fingerprint="fp")
    assert "\n" not in str(exc.value)
    checkpoint.save(d, _blob(1.0), fingerprint="other")
    (d / "prev.pt").unlink()
    with pytest.raises(CheckpointError, match=r"another configuration/architecture \(fingerprint differs\).*--overwrite"):
        checkpoint.load(d, fingerprint="fp")
    (d / "last.pt").write_bytes((d / "last.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.load(d, fingerprint="other")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "none", fingerprint="fp")


def test_only_prev_after_a_crash_between_renames(tmp_path: Path) -> None:
    d = tmp_path / "ck"
    checkpoint.save(d, _blob(1.0), fingerprint="fp")
    (d / "last.pt").rename(d / "prev.pt")
    (d / ".tmp-123-last.pt").write_bytes(b"half")  # an interrupted write
    assert checkpoint.exists(d)
    blob, _ = checkpoint.load(d, fingerprint="fp")
    assert blob["student"]["w"][0, 0] == 1.0
    checkpoint.save(d, _blob(2.0), fingerprint="fp")
    assert not (d / ".tmp-123-last.pt").exists()


def test_unpickling_is_weights_only(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    d = tmp_path / "ck"
    checkpoint.save(d, {"x": Evil()}, fingerprint="fp")  # checksum is right, content is not data
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.load(d, fingerprint="fp")


def test_fingerprint_sees_architecture_and_config_not_values_or_volatile_keys() -> None:
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    fp = checkpoint.fingerprint(_cfg(), {"student": a})
    assert fp == checkpoint.fingerprint(_cfg(), {"student": b})  # other values, same layout
    assert fp == checkpoint.fingerprint({**_cfg(device="cuda", threads=3), "eval": {"samples": 5}}, {"student": a})
    assert fp != checkpoint.fingerprint(_cfg(), {"student": torch.nn.Linear(4, 2)})
    assert fp != checkpoint.fingerprint(_cfg(), {"student": a.double()})
    assert fp != checkpoint.fingerprint(_cfg(lr=2e-3), {"student": a})


def test_rng_state_roundtrip() -> None:
    state = checkpoint.rng_state()
    x = (torch.rand(3), random.random(), np.random.rand())
    checkpoint.set_rng_state(state)
    y = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(x[0], y[0]) and x[1:] == y[1:]
