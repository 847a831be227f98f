"""The probe set's cached teacher outputs: estimated by ``inspect``, measured on the engine's own cache;
``train.probe_cache = "host"`` keeps them off the device and gives the same probe loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _probe_ctx(tmp_path: Path, cache: str, batch: int = 8):
    from distillctl import engine
    from distillctl.cli.distill_cmd import build_config

    cfg, _ = build_config("smoke", {"train": {"device": "cpu", "batch_size": batch}},
                          ["train.threads=1", "train.probe_batches=2", f"train.probe_cache={cache}"])
    ctx = engine.Run(cfg, tmp_path / cache).ctx
    engine.preflight(ctx)
    engine.build_models(ctx)
    engine.build_probe_set(ctx)
    return engine, ctx


def test_inspect_estimates_the_probe_cache(tmp_path: Path) -> None:
    from distillctl.inspect import inspect_document

    _, ctx = _probe_ctx(tmp_path, "device")
    measured = sum(t.numel() * t.element_size() for pb in ctx.probe_batches
                   for t in [*pb.teacher_hidden.values(), pb.teacher_out["logits"]])
    doc = inspect_document("quickstart", "layer-subset", ["student.ratio=0.5"], 8)
    estimate = doc["memory"]["fp32"]["probe_cache"]
    assert estimate == pytest.approx(measured, rel=0.15), (estimate, measured)
    assert doc["memory"]["fp32"]["total"] >= estimate


def test_host_probe_cache_gives_the_same_probe_loss(tmp_path: Path) -> None:
    engine, dev_ctx = _probe_ctx(tmp_path, "device")
    _, host_ctx = _probe_ctx(tmp_path, "host")
    assert all(t.device.type == "cpu" for pb in host_ctx.probe_batches for t in pb.teacher_hidden.values())
    for ctx in (dev_ctx, host_ctx):
        engine.build_training(ctx)
    torch.testing.assert_close(engine.probe_loss(dev_ctx)["total"], engine.probe_loss(host_ctx)["total"])
