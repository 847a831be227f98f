"""The engine's training step vs a bare hand-written distillation step, same models, same batches.

    .venv/bin/python tests/benchmarks/bench_loop.py [--preset quickstart] [--steps 20] [--device cpu|cuda]

Both steps do the same work: teacher forward under no_grad with hooks on the arm's teacher layers,
student forward with hooks on its layers, the family's task + KD terms, the arm's layerwise MSE
through the projections, backward, grad clipping, AdamW and the LR schedule. The bare step is
written out by hand (hooks registered once, no engine code); the engine's is
``distillctl.engine.train_step`` on the run context the engine builds. Steps alternate (bare, engine,
bare, ...) so a busy machine slows both alike; the median of each is compared. Runs on CPU, and on
CUDA when present (CUDA times synchronise around each step: that is the benchmark's, not the engine's).
Prints one line per device: ``engine/bare = R`` (must-hold: within 5 % on CPU for the quickstart models).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def build(preset: str, device: str, batch_size: int):
    from distillctl import engine
    from distillctl.cli.distill_cmd import build_config
    from distillctl.plugins import get_plugins

    get_plugins()
    cfg, _ = build_config(preset, {"train": {"device": device, "batch_size": batch_size}}, [])
    cfg["train"]["threads"] = torch.get_num_threads()
    ctx = engine.Run(cfg, Path(tempfile.mkdtemp()) / "bench").ctx
    engine.preflight(ctx)
    engine.build_models(ctx)
    engine.build_probe_set(ctx)
    engine.build_training(ctx)
    return engine, ctx


def bare_stepper(ctx):
    """A hand-written step over the same modules (its own AdamW and schedule, hooks registered once)."""
    from distillctl.engine import _tokens, lr_lambda, param_groups
    from distillctl.layerwise import masked_mse

    family, teacher, student, proj = ctx.family, ctx.teacher_model, ctx.student_model, ctx.projections
    loss_cfg, train = ctx.cfg["loss"], ctx.train
    opt = torch.optim.AdamW(param_groups([student, proj], train["weight_decay"]), lr=train["lr"], betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(train["warmup_steps"], 10**6, train["min_lr_ratio"]))
    params = [p for g in opt.param_groups for p in g["params"]]
    t_mods, s_mods = dict(teacher.named_modules()), dict(student.named_modules())
    hidden: dict[str, torch.Tensor] = {}

    def keep(key):
        def hook(module, args, out):
            hidden[key] = out[0] if isinstance(out, (tuple, list)) else out
        return hook

    handles = {}
    for m in ctx.module_names:
        for s, t in ctx.pairs[m]:
            handles[("t", t)] = t_mods[t].register_forward_hook(keep("t:" + t))
            handles[("s", s)] = s_mods[s].register_forward_hook(keep("s:" + s))

    def step(batch, arm):
        inputs = family.inputs(batch, ctx.device)
        with torch.no_grad():
            t_out = family.forward(teacher, inputs)
        s_out = family.forward(student, inputs)
        task = sum(family.task_loss(s_out, inputs).values())
        kd = sum(family.kd_terms(s_out, t_out, inputs, temperature=loss_cfg["temperature"]).values())
        lw = 0.0
        for m in arm:
            mask = family.position_mask(m, inputs)
            terms = [masked_mse(ctx.objective.project(s, _tokens(hidden["s:" + s])), _tokens(hidden["t:" + t]), mask,
                                loss_cfg["normalize_layers"]) for s, t in ctx.pairs[m]]
            lw = lw + torch.stack(terms).mean()
        loss = loss_cfg["w_task"] * task + loss_cfg["w_kd"] * kd + loss_cfg["w_lw"] * lw
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train["grad_clip"])
        opt.step()
        sched.step()
        hidden.clear()

    return step


def bench(preset: str, device: str, steps: int, batch_size: int) -> float:
    engine, ctx = build(preset, device, batch_size)
    batches = engine.make_batches(ctx)
    data = [next(batches) for _ in range(min(steps, 8))]
    bare = bare_stepper(ctx)
    ep_sums: dict[str, torch.Tensor] = {}

    def timed(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    t_bare, t_engine = [], []
    for i in range(steps + 3):
        batch, arm = data[i % len(data)], ctx.arms[i % len(ctx.arms)]
        s_paths, t_paths = ctx.objective.student_paths(arm), ctx.objective.teacher_paths(arm)
        tb = timed(lambda: bare(batch, arm))  # noqa: B023 - called at once
        te = timed(lambda: engine.train_step(ctx, batch, arm, s_paths, t_paths, ep_sums))  # noqa: B023
        if i >= 3:  # warm-up steps (allocator, kernels) are not measured
            t_bare.append(tb)
            t_engine.append(te)
    mb, me = statistics.median(t_bare), statistics.median(t_engine)
    ratio = me / mb
    print(f"{device}: {preset} batch {batch_size}, {steps} steps: bare {mb * 1e3:.1f} ms/step, engine {me * 1e3:.1f} ms/step, "
          f"engine/bare = {ratio:.3f}")
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: a shared machine's load adds no noise)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    for dev in devices:
        if dev == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        bench(args.preset, dev, args.steps, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
