"""``distillctl inspect``'s training-memory estimate vs the measured peak of one engine step.

    .venv/bin/python tests/benchmarks/bench_memory.py [--preset quickstart] [--batch-size 32] [--device cpu|cuda]
    .venv/bin/python tests/benchmarks/bench_memory.py --teacher coca-base --batch-size 64 --device cuda   # mid-size, GPU

Builds the run exactly as ``distill`` does (teacher, student, probe set of ``train.probe_batches``
batches of the batch size, projections, AdamW), runs two optimizer steps with every module's
layerwise terms (the largest arm), and compares the peak with the estimate (``fp32``, weights +
grads + AdamW + activations + probe cache). On CUDA the peak is ``torch.cuda.max_memory_allocated``
(everything this process allocated on the device); on CPU it is the growth of the process's peak
resident set over its size before the models were built (allocator caching and fragmentation
included, so expect the measurement above the estimate by some tens of MB).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import torch


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--teacher", default=None, help="override the preset's teacher (e.g. coca-base)")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from distillctl import engine
    from distillctl.cli.distill_cmd import build_config
    from distillctl.inspect import inspect_document
    from distillctl.plugins import get_plugins

    get_plugins()
    flags = {"train": {"device": args.device, "batch_size": args.batch_size}}
    if args.teacher:
        flags["teacher"] = {"name": args.teacher, "weights": args.weights}
    cfg, _ = build_config(args.preset, flags, [])
    cfg["train"]["probe_batch_size"] = args.batch_size
    student_opts = [f"student.{k}={v}" for k, v in cfg["student"].items() if k != "name" and not isinstance(v, dict)]
    doc = inspect_document(cfg["teacher"]["name"], cfg["student"]["name"], student_opts, args.batch_size,
                           probe_batches=cfg["train"]["probe_batches"])
    estimate = doc["memory"]["fp32"]

    base = rss_bytes()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ctx = engine.Run(cfg, Path(tempfile.mkdtemp()) / "bench").ctx
    engine.preflight(ctx)
    engine.build_models(ctx)
    engine.build_probe_set(ctx)
    engine.build_training(ctx)
    batches = engine.make_batches(ctx)
    arm = tuple(ctx.module_names)  # every module's layerwise terms: the largest step
    s_paths, t_paths = ctx.objective.student_paths(arm), ctx.objective.teacher_paths(arm)
    for _ in range(2):
        engine.train_step(ctx, next(batches), arm, s_paths, t_paths, {})
    if args.device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    mib = 2**20
    parts = ", ".join(f"{k} {estimate[k] / mib:.1f}" for k in ("weights", "grads", "optimizer", "activations", "probe_cache"))
    print(f"{args.device}: teacher {cfg['teacher']['name']}, batch {args.batch_size}: estimate {estimate['total'] / mib:.1f} MiB "
          f"({parts}); measured peak {peak / mib:.1f} MiB; measured/estimate = {peak / estimate['total']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
