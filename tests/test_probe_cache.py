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


def _tensors(value: object, path: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) dict, by its key path."""
    if isinstance(value, dict):
        return {k: t for key, v in value.items() for k, t in _tensors(v, f"{path}/{key}").items()}
    return {path: value} if isinstance(value, torch.Tensor) else {}


def _cached(pb: object) -> dict[str, torch.Tensor]:
    return {**_tensors(pb.inputs, "inputs"), **_tensors(pb.teacher_out, "teacher_out"),  # type: ignore[attr-defined]
            **_tensors(pb.teacher_hidden, "teacher_hidden")}  # type: ignore[attr-defined]


def test_host_probe_cache_holds_the_device_cache_on_the_host_and_moves_it_back_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU-only machine "host" and "device" are one place, so the device check cannot fail by itself:
    compare the two caches tensor by tensor, and send the host cache to a device that is not the host
    (``meta``) to check that every cached tensor -- inputs, teacher outputs, hidden states -- goes there,
    with its shape and dtype, and that the device cache is used in place."""
    engine, dev_ctx = _probe_ctx(tmp_path, "device")
    _, host_ctx = _probe_ctx(tmp_path, "host")
    assert len(dev_ctx.probe_batches) == len(host_ctx.probe_batches) == 2
    for dev_pb, host_pb in zip(dev_ctx.probe_batches, host_ctx.probe_batches, strict=True):
        dev, host = _cached(dev_pb), _cached(host_pb)
        assert host.keys() == dev.keys() and any(k.startswith("inputs/") for k in host)
        for key, t in host.items():
            assert t.device.type == "cpu" and not t.requires_grad, key
            assert t.dtype == dev[key].dtype and torch.equal(t, dev[key]), key  # the host cache IS the cache
        assert host_pb.weight == dev_pb.weight
        assert engine._probe_on(dev_ctx, dev_pb) is dev_pb  # "device": used where it is, nothing copied

        monkeypatch.setattr(host_ctx, "device", torch.device("meta"))  # a device that is not the host
        moved = _cached(engine._probe_on(host_ctx, host_pb))
        assert moved.keys() == host.keys()
        for key, t in moved.items():
            assert t.device.type == "meta" and t.shape == host[key].shape and t.dtype == host[key].dtype, key
        assert all(t.device.type == "cpu" for t in _cached(host_pb).values())  # the cache itself stays on the host
        monkeypatch.setattr(host_ctx, "device", torch.device("cpu"))


def test_host_probe_cache_gives_the_same_probe_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, dev_ctx = _probe_ctx(tmp_path, "device")
    _, host_ctx = _probe_ctx(tmp_path, "host")
    for ctx in (dev_ctx, host_ctx):
        engine.build_training(ctx)
    moved_to: list[object] = []
    real_move = engine._move
    monkeypatch.setattr(engine, "_move", lambda value, device: (moved_to.append(device), real_move(value, device))[1])
    dev_loss = engine.probe_loss(dev_ctx)["total"]
    assert moved_to == []  # the device cache is used in place
    host_loss = engine.probe_loss(host_ctx)["total"]
    # every batch of the host cache went to the run's device (one _move per dict and tensor; never to the host)
    assert len(moved_to) >= sum(len(_cached(pb)) for pb in host_ctx.probe_batches)
    assert set(moved_to) == {host_ctx.device}
    torch.testing.assert_close(dev_loss, host_loss)
