"""The engine's training loop against a bare hand-written distillation step, over a whole run.

    .venv/bin/python tests/benchmarks/bench_loop.py [--preset quickstart] [--steps 150] [--threads 1,2] [--reps 2]

For each thread count (default: 1 and every core), on the preset's models and batches with plain
layerwise distillation (every module, every step: ``fixed-order@all``):

* **bare**: a hand-written step (teacher forward under no_grad with hooks on its layers, student forward
  with hooks, the family's task + KD terms, the layerwise MSE through the projections, backward, grad
  clipping, AdamW, the LR schedule; hooks registered once), over ``--steps`` pre-drawn batches;
* **engine step**: ``distillctl.engine.train_step`` on the same batches (compute only: no data, no probe);
* **engine run**: a whole ``distillctl distill`` run of ``--steps`` steps (data loader, probe, rewards,
  bookkeeping; no evaluation), timed from its ``report.json``.

Bare and engine alternate, ``--reps`` times (A/B back to back, so a busy machine slows both alike); the
best of each is compared. Prints per thread count: ms per step, ``compute efficiency`` = bare / engine
step (must hold: >= 0.97), ``run efficiency`` = bare / the run's compute seconds and bare / the run's
training seconds counting data and probe (must hold: >= 0.95), and the run's step time per episode.
Run it on a quiet machine: one other busy process on a 2-core box halves every number here.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def config(preset: str, batch_size: int | None, steps: int, threads: int, episode_steps: int | None = None) -> dict:
    from distillctl.cli.distill_cmd import build_config

    sets = ["policy.name=fixed-order", "policy.arms=all", "eval.evaluators=[]", f"train.threads={threads}"]
    if batch_size:
        sets.append(f"train.batch_size={batch_size}")
    if episode_steps:
        sets.append(f"train.episode_steps={episode_steps}")
    cfg, _ = build_config(preset, {"train": {"device": "cpu"}}, sets)
    cfg["train"]["episodes"] = max(1, steps // cfg["train"]["episode_steps"])
    return cfg


def build(cfg: dict):
    from distillctl import engine

    ctx = engine.Run(cfg, Path(tempfile.mkdtemp()) / "bench").ctx
    engine.preflight(ctx)
    engine.build_models(ctx)
    engine.build_probe_set(ctx)
    engine.build_training(ctx)
    return ctx


def bare_stepper(ctx, student, proj):
    """A hand-written step over ``student`` / ``proj`` (copies of the run's; its own AdamW and schedule)."""
    from distillctl.engine import _tokens, lr_lambda, param_groups
    from distillctl.layerwise import masked_mse

    family, teacher = ctx.family, ctx.teacher_model
    loss_cfg, train = ctx.cfg["loss"], ctx.train
    opt = torch.optim.AdamW(param_groups([student, proj], train["weight_decay"]), lr=train["lr"], betas=(0.9, 0.98))
    total = train["episodes"] * train["episode_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(train["warmup_steps"], total, train["min_lr_ratio"]))
    params = [p for g in opt.param_groups for p in g["params"]]
    t_mods, s_mods = dict(teacher.named_modules()), dict(student.named_modules())
    hidden: dict[str, torch.Tensor] = {}

    def keep(key):
        def hook(module, args, out):
            hidden[key] = out[0] if isinstance(out, (tuple, list)) else out
        return hook

    for m in ctx.module_names:
        for s, t in ctx.pairs[m]:
            t_mods[t].register_forward_hook(keep("t:" + t))
            s_mods[s].register_forward_hook(keep("s:" + s))
    arm = tuple(ctx.module_names)

    def project(path, h):
        from distillctl.layerwise import projection_key

        key = projection_key(path)
        return proj[key](h) if key in proj else h

    def step(batch):
        inputs = family.inputs(batch, ctx.device)
        with torch.no_grad():
            t_out = family.forward(teacher, inputs)
        s_out = family.forward(student, inputs)
        task = sum(family.task_loss(s_out, inputs).values())
        kd = sum(family.kd_terms(s_out, t_out, inputs, temperature=loss_cfg["temperature"]).values())
        lw = 0.0
        for m in arm:
            mask = family.position_mask(m, inputs)
            terms = [masked_mse(project(s, _tokens(hidden["s:" + s])), _tokens(hidden["t:" + t]), mask,
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


def timed_loop(fn, batches) -> float:
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    return time.perf_counter() - t0


def bench(preset: str, threads: int, steps: int, reps: int, batch_size: int | None, episode_steps: int | None = None) -> dict:
    from distillctl import engine

    torch.set_num_threads(threads)
    cfg = config(preset, batch_size, steps, threads, episode_steps)
    ctx = build(cfg)
    it = engine.make_batches(ctx)
    batches = [next(it) for _ in range(steps)]
    del it
    student0, proj0 = copy.deepcopy(ctx.student_model.state_dict()), copy.deepcopy(ctx.projections.state_dict())
    opt0 = copy.deepcopy(ctx.optimizer.state_dict())
    arm = tuple(ctx.module_names)
    s_paths, t_paths = ctx.objective.student_paths(arm), ctx.objective.teacher_paths(arm)
    bare_s, engine_s, runs = [], [], []
    # warm-up, not timed: the allocator, the kernels' first calls and the caches (the first loop of a process
    # ran 10 % slower than the second, whichever it was)
    warm_s, warm_p = copy.deepcopy(ctx.student_model), copy.deepcopy(ctx.projections)
    timed_loop(bare_stepper(ctx, warm_s, warm_p), batches[:10])
    del warm_s, warm_p
    warm_sums: dict[str, torch.Tensor] = {}
    timed_loop(lambda b: engine.train_step(ctx, b, arm, s_paths, t_paths, warm_sums), batches[:10])
    for rep in range(reps):
        # bare: fresh copies of the run's initial student and projections
        student, proj = copy.deepcopy(ctx.student_model), copy.deepcopy(ctx.projections)
        student.load_state_dict(student0)
        proj.load_state_dict(proj0)
        bare_s.append(timed_loop(bare_stepper(ctx, student, proj), batches))
        del student, proj
        # engine: the engine's own step on the run context (reset to the same start)
        ctx.student_model.load_state_dict(student0)
        ctx.projections.load_state_dict(proj0)
        ctx.optimizer.load_state_dict(opt0)
        ctx.scheduler.last_epoch = 0
        sums: dict[str, torch.Tensor] = {}
        engine_s.append(timed_loop(lambda b: engine.train_step(ctx, b, arm, s_paths, t_paths, sums), batches))  # noqa: B023
        # a whole run (data loader, probe, bookkeeping), timed by its own report
        with tempfile.TemporaryDirectory() as tmp:
            report = engine.run(copy.deepcopy(cfg), Path(tmp) / f"run{rep}")
        runs.append(report)
    bare, eng = min(bare_s), min(engine_s)
    best = min(runs, key=lambda r: r["timings"]["train_s"])
    t = best["timings"]
    per_episode = [round(1000 * e["compute_s"] / max(e["steps"], 1), 1) for e in best["episodes"]]
    return {
        "threads": threads, "steps": steps, "batch_size": ctx.train["batch_size"],
        "bare_ms_per_step": round(1000 * bare / steps, 1), "engine_ms_per_step": round(1000 * eng / steps, 1),
        "compute_efficiency": round(bare / eng, 3),
        "run": {"compute_s": t["compute_s"], "data_s": t["data_s"], "probe_s": t["probe_s"], "train_s": t["train_s"],
                "compute_efficiency": round(bare / t["compute_s"], 3),
                "efficiency_with_data_and_probe": round(bare / t["train_s"], 3),
                # what the bare step does not do at all: a batch drawn between steps, a probe after each episode
                "data_ms_per_batch": round(1000 * t["data_s"] / steps, 1),
                "probe_ms_per_episode": round(1000 * t["probe_s"] / max(len(best["episodes"]), 1), 1),
                "data_share": round(t["data_s"] / t["train_s"], 3), "probe_share": round(t["probe_s"] / t["train_s"], 3)},
        "run_ms_per_step_by_episode": per_episode,
        "all_reps": {"bare_s": [round(x, 2) for x in bare_s], "engine_s": [round(x, 2) for x in engine_s],
                     "run_train_s": [r["timings"]["train_s"] for r in runs]},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--steps", type=int, default=150, help="a whole v0.1 quickstart run: 150 full steps (episodes of the "
                                                          "preset's episode_steps)")
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated torch thread counts")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--episode-steps", type=int, default=None,
                    help="steps per episode, so one probe per this many steps (default: the preset's; v0.1's quickstart: 10)")
    args = ap.parse_args()
    from distillctl.plugins import get_plugins

    get_plugins()
    for threads in dict.fromkeys(int(t) for t in args.threads.split(",")):
        print(json.dumps(bench(args.preset, threads, args.steps, args.reps, args.batch_size, args.episode_steps)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
