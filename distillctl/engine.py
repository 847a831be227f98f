"""The distillation loop: module-wise adaptive layerwise distillation (OPTIMA), top to bottom.

``run(cfg, out_dir)`` is the whole job behind ``distillctl distill``. It calls named phases in order,
each reading and filling one typed :class:`RunContext`::

    0. preflight        out dir, teacher weights, data sources, batch size -- before any model is built
    1. build_models     teacher (eval, frozen, no_grad forwards), family, splitter, student, layer pairs
    2. build_probe_set  fixed held-out batches; the teacher's probe outputs computed ONCE
    3. build_training   projections, objective, arms, policy, AdamW, schedule
    4. restore_or_start a checkpoint (``--resume``) or the first probe loss
    5. run_episodes     policy picks an arm -> T steps with only that arm's layerwise terms ->
                        one probe evaluation -> reward = relative probe-loss decrement -> policy.update
    6. finish           export (the family writes the files), evaluate, report

The engine is model-agnostic: it never imports a model library. Everything that depends on what
the model is -- inputs, forward, task loss, logit-level KD terms, position masks, export -- comes from
the run's **family** (:class:`distillctl.interfaces.Family`). One cleanup rule, here and nowhere
else (:func:`_out_dir_guard`): a failure before export removes only what this run created (a
resumable checkpoint is kept); a failure after export keeps the student and records the error in
``report.json``. Library code only: raises DistillctlError subclasses, never prints (progress goes to
``on_event``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillctl import __version__, checkpoint
from distillctl.config import component_options, dumps_toml, preflight_teacher
from distillctl.data.loader import BatchSampler, SkipCounter, check_batch_size, check_usable, make_batch, make_loader
from distillctl.errors import DistillctlError, TrainingError
from distillctl.interfaces import EvalContext, Teacher
from distillctl.layerwise import HiddenStateTap, build_projections, layer_pairs, masked_mse, projection_key
from distillctl.plugins import call_observers, registry
from distillctl.policies import arm_name, build_arms
from distillctl.rundir import RunDir

HUGE = 10**7  # data sources larger than this are streams: read in order, never permuted
Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class LoopState:
    """Everything the episode loop mutates (what a checkpoint holds besides model/optim tensors)."""

    episode: int = 0
    step: int = 0
    prev_probe: float = float("nan")
    initial_probe: float = float("nan")
    batches: int = 0  # batches drawn from the sampler (= data position; skipped-empty ones included)
    samples: int = 0
    initial_terms: dict[str, float] = field(default_factory=dict)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: {"data_s": 0.0, "compute_s": 0.0, "probe_s": 0.0, "train_s": 0.0})

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProbeBatch:
    """One fixed held-out batch: the family's inputs and the teacher's outputs / hidden states (computed once)."""

    inputs: dict[str, Any]
    teacher_out: dict[str, Any]
    teacher_hidden: dict[str, torch.Tensor]


@dataclass
class RunContext:
    """What the phases share. Filled in phase order; a field is None until its phase has run."""

    cfg: dict[str, Any]
    out_dir: Path
    overwrite: bool = False
    resume: bool = False
    emit: Emit = field(default=lambda kind, payload: None)
    t_start: float = field(default_factory=time.perf_counter)
    # 0. preflight
    rundir: RunDir | None = None  # owns out_dir: checks, lock, cleanup rule
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    autocast_dtype: torch.dtype | None = None
    train_ds: Any = None
    probe_ds: Any = None
    probe_bs: int = 0
    # 1. models
    teacher: Teacher | None = None
    family: Any = None
    splitter: Any = None
    student: Any = None  # interfaces.Student
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    module_names: list[str] = field(default_factory=list)
    # 2-3. probe set, training
    probe_batches: list[ProbeBatch] = field(default_factory=list)
    projections: torch.nn.ModuleDict | None = None
    objective: Objective | None = None
    arms: list[tuple[str, ...]] = field(default_factory=list)
    policy: Any = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    trainable: list[torch.nn.Parameter] = field(default_factory=list)
    # 4-6. loop and finish
    state: LoopState = field(default_factory=LoopState)
    skips: SkipCounter = field(default_factory=SkipCounter)
    checkpoint: dict[str, Any] | None = None  # the loaded checkpoint on --resume
    fingerprint: str = ""  # config + model layouts; a checkpoint of another run is refused
    export: dict[str, Any] | None = None  # sizes, once the student is written

    @property
    def train(self) -> dict[str, Any]:
        return self.cfg["train"]

    @property
    def teacher_model(self) -> torch.nn.Module:
        assert self.teacher is not None
        return self.teacher.model

    @property
    def student_model(self) -> torch.nn.Module:
        return self.student.model

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "checkpoints" / "last.pt"


# --------------------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DistillctlError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def param_groups(modules: list[torch.nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on biases, norms, embeddings, scales)."""
    decay, no_decay = [], []
    for m in modules:
        for n, p in m.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "embedding" not in n and "token" not in n else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _tokens(h: torch.Tensor) -> torch.Tensor:
    """A layer's hidden state as tokens: ``[B, L, D]`` as is, convolutional ``[B, D, H, W]`` -> ``[B, H*W, D]``."""
    return h.flatten(2).transpose(1, 2) if h.ndim == 4 else h


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _detach(out: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}


# --------------------------------------------------------------------------------------- objective
class Objective:
    """The loss of one batch: ``w_task * task + w_kd * kd + w_lw * Σ_{m in arm} layerwise_m``.

    The family gives the task and KD terms; the layerwise terms are generic: per module, the mean
    over its (student layer, teacher layer) pairs of the masked (family's position mask), normalised
    hidden-state MSE, through a learned projection where widths differ.
    """

    def __init__(self, loss_cfg: dict[str, Any], family: Any, pairs: dict[str, list[tuple[str, str]]],
                 projections: torch.nn.ModuleDict) -> None:
        self.cfg = loss_cfg
        self.family = family
        self.pairs = pairs
        self.projections = projections

    def student_paths(self, modules: tuple[str, ...]) -> list[str]:
        return [s for m in modules for s, _ in self.pairs[m]]

    def teacher_paths(self, modules: tuple[str, ...]) -> list[str]:
        return [t for m in modules for _, t in self.pairs[m]]

    def project(self, path: str, h: torch.Tensor) -> torch.Tensor:
        key = projection_key(path)
        return self.projections[key](h) if key in self.projections else h

    def __call__(self, student_out: dict[str, Any], teacher_out: dict[str, Any], student_hidden: dict[str, torch.Tensor],
                 teacher_hidden: dict[str, torch.Tensor], inputs: dict[str, Any], modules: tuple[str, ...]) -> dict[str, torch.Tensor]:
        c = self.cfg
        task_terms = self.family.task_loss(student_out, inputs)
        kd_terms = self.family.kd_terms(student_out, teacher_out, inputs, temperature=c["temperature"])
        task = sum(task_terms.values())
        kd = sum(kd_terms.values()) if kd_terms else torch.zeros((), device=task.device)
        per_module: dict[str, torch.Tensor] = {}
        for m in modules:
            mask = self.family.position_mask(m, inputs)  # [B, L_m] or None (all positions)
            terms = [
                masked_mse(self.project(s, _tokens(student_hidden[s])), _tokens(teacher_hidden[t]), mask, c["normalize_layers"])
                for s, t in self.pairs[m]
            ]
            per_module[m] = torch.stack(terms).mean()
        stacked = torch.stack(list(per_module.values())) if per_module else task.new_zeros((1,))
        # an arm of several modules: sum (standard layerwise KD) or mean (every arm weighs like one module)
        layerwise = stacked.mean() if c["arm_reduce"] == "mean" else stacked.sum()
        total = c["w_task"] * task + c["w_kd"] * kd + c["w_lw"] * layerwise
        return {"total": total, "task": task, "kd": kd, "layerwise": layerwise,
                **{f"lw/{m}": v for m, v in per_module.items()},
                **{f"task/{k}": v for k, v in task_terms.items()}, **{f"kd/{k}": v for k, v in kd_terms.items()}}


# --------------------------------------------------------------------------------------- phases
def preflight(ctx: RunContext) -> None:
    """0. Cheap checks before anything is built or written: out dir, teacher weights, data, batch size."""
    train = ctx.train
    # first: an --out this run may not use (in use, holds a run, unwritable, full disk) costs nothing
    ctx.rundir = RunDir(ctx.out_dir, overwrite=ctx.overwrite, resume=ctx.resume)
    ctx.rundir.preflight()
    preflight_teacher(ctx.cfg)
    ctx.device = resolve_device(train["device"])
    if train["threads"]:
        torch.set_num_threads(train["threads"])
    ctx.autocast_dtype = torch.bfloat16 if train["precision"] == "bf16" else None
    datasets = registry("dataset")
    data_opts = component_options(ctx.cfg["data"], "data")
    name = ctx.cfg["data"]["name"]
    ctx.train_ds = datasets.create(name, split="train", **data_opts)
    check_usable(ctx.train_ds)
    check_batch_size(ctx.train_ds, train["batch_size"])
    try:  # held-out data for the probe: the source's ``val`` split (every built-in has one)
        ctx.probe_ds = datasets.create(name, split="val", **data_opts)
    except DistillctlError:
        ctx.probe_ds = ctx.train_ds
    check_usable(ctx.probe_ds)
    ctx.probe_bs = min(train["probe_batch_size"] or train["batch_size"], len(ctx.probe_ds))
    ctx.emit("status", {"message": f"data: {ctx.train_ds.describe()}"})


def build_models(ctx: RunContext) -> None:
    """1. Teacher (frozen), its family and splitter, the student, and the layer pairs."""
    cfg, seed = ctx.cfg, ctx.train["seed"]
    t0 = time.perf_counter()
    seed_everything(seed)
    teacher = registry("teacher").create(
        cfg["teacher"]["name"], weights=cfg["teacher"].get("weights"), device=str(ctx.device),
        **component_options(cfg["teacher"], "teacher"),
    )
    teacher.model.to(ctx.device).eval().requires_grad_(False)  # invariant, not a comment
    ctx.teacher = teacher
    ctx.family = create_family(cfg, teacher)
    splitter_name = cfg["splitter"]["name"] if cfg["splitter"]["name"] != "auto" else teacher.splitter
    ctx.splitter = registry("splitter").create(splitter_name, **component_options(cfg["splitter"], "splitter"))
    seed_everything(seed)
    ctx.student = registry("student").create(
        cfg["student"]["name"], teacher=teacher, splitter=ctx.splitter, **component_options(cfg["student"], "student")
    )
    ctx.student.model.to(ctx.device).train()
    ctx.splitter.check_compatible(ctx.teacher_model, ctx.student_model)
    t_modules, s_modules = ctx.splitter.modules(ctx.teacher_model), ctx.splitter.modules(ctx.student_model)
    ctx.pairs = layer_pairs(t_modules, s_modules, ctx.student.layer_map)
    ctx.module_names = [m.name for m in s_modules]
    ctx.emit("status", {"message": f"models built in {time.perf_counter() - t0:.1f}s"})


def create_family(cfg: dict[str, Any], teacher: Teacher) -> Any:
    """The run's family: ``[family] name`` or the teacher's own, with the section's options."""
    name = cfg.get("family", {}).get("name", "auto")
    name = teacher.family if name in (None, "auto") else name
    return registry("family").create(name, **component_options(cfg.get("family", {"name": name}), "family"))


def build_probe_set(ctx: RunContext) -> None:
    """2. Fixed held-out batches; the teacher's outputs and hidden states on them, computed once."""
    teacher, family = ctx.teacher, ctx.family
    assert teacher is not None
    all_t = [t for m in ctx.module_names for _, t in ctx.pairs[m]]
    n, bs = len(ctx.probe_ds), ctx.probe_bs
    for b in range(ctx.train["probe_batches"]):
        batch = make_batch(ctx.probe_ds, [i % n for i in range(b * bs, (b + 1) * bs)], teacher.transform, teacher.tokenizer)
        inputs = family.inputs(batch, ctx.device)
        with torch.no_grad(), _autocast(ctx.device, ctx.autocast_dtype), HiddenStateTap(ctx.teacher_model, all_t) as tap:
            t_out = family.forward(ctx.teacher_model, inputs)
        ctx.probe_batches.append(ProbeBatch(inputs, _detach(t_out), {k: v.detach() for k, v in tap.outputs.items()}))


def build_training(ctx: RunContext) -> None:
    """3. Projections (from one student probe forward: widths of every pair), objective, arms, policy, AdamW."""
    seed, train = ctx.train["seed"], ctx.train
    all_s = [s for m in ctx.module_names for s, _ in ctx.pairs[m]]
    first = ctx.probe_batches[0]
    with torch.no_grad(), HiddenStateTap(ctx.student_model, all_s) as tap:
        ctx.family.forward(ctx.student_model, first.inputs)
        widths = {s: (_tokens(tap.outputs[s]).shape[-1], _tokens(first.teacher_hidden[t]).shape[-1])
                  for m in ctx.module_names for s, t in ctx.pairs[m]}
    seed_everything(seed + 1)
    ctx.projections = build_projections(widths).to(ctx.device)
    ctx.objective = Objective(ctx.cfg["loss"], ctx.family, ctx.pairs, ctx.projections)
    ctx.arms = build_arms(ctx.module_names, ctx.cfg["policy"]["arms"])
    ctx.policy = registry("policy").create(ctx.cfg["policy"]["name"], arms=ctx.arms, seed=seed,
                                           **component_options(ctx.cfg["policy"], "policy"))
    ctx.optimizer = torch.optim.AdamW(param_groups([ctx.student_model, ctx.projections], train["weight_decay"]),
                                      lr=train["lr"], betas=(0.9, 0.98))
    total_steps = train["episodes"] * train["episode_steps"]
    ctx.scheduler = torch.optim.lr_scheduler.LambdaLR(ctx.optimizer, lr_lambda(train["warmup_steps"], total_steps,
                                                                               train["min_lr_ratio"]))
    ctx.trainable = [p for g in ctx.optimizer.param_groups for p in g["params"]]


def probe_loss(ctx: RunContext) -> dict[str, float]:
    """The full objective over ALL modules on the probe set, so rewards compare across arms."""
    assert ctx.objective is not None
    model = ctx.student_model
    all_s = [s for m in ctx.module_names for s, _ in ctx.pairs[m]]
    model.eval()
    sums: dict[str, float] = {}
    with torch.no_grad(), _autocast(ctx.device, ctx.autocast_dtype), HiddenStateTap(model, all_s) as tap:
        for pb in ctx.probe_batches:
            s_out = ctx.family.forward(model, pb.inputs)
            terms = ctx.objective(s_out, pb.teacher_out, tap.outputs, pb.teacher_hidden, pb.inputs, tuple(ctx.module_names))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) / len(ctx.probe_batches)
    model.train()
    return sums


def reward_value(ctx: RunContext, terms: dict[str, float]) -> float:
    return terms[ctx.cfg["loss"]["reward_loss"]]  # "total" | "layerwise" | "task"


def restore_or_start(ctx: RunContext) -> None:
    """4. ``--resume``: everything the loop mutates comes back (models, optimizer, schedule, policy, data
    position, RNGs). Otherwise: the first probe loss. Then ``run.toml`` (what ``--resume`` reads back)."""
    assert ctx.rundir is not None
    ctx.fingerprint = checkpoint.fingerprint(ctx.cfg, {"student": ctx.student_model, "projections": ctx.projections})
    if ctx.resume:  # checksum + fingerprint verified; a damaged last.pt falls back to prev.pt
        ckpt, note = checkpoint.load(ctx.rundir.checkpoint_dir, fingerprint=ctx.fingerprint, map_location=ctx.device)
        if note:
            ctx.emit("warning", {"message": note})
        ctx.student_model.load_state_dict(ckpt["student"])
        ctx.projections.load_state_dict(ckpt["projections"])
        ctx.optimizer.load_state_dict(ckpt["optimizer"])
        ctx.scheduler.load_state_dict(ckpt["scheduler"])
        ctx.policy.load_state_dict(json.loads(ckpt["policy"]))
        ctx.state = LoopState(**json.loads(ckpt["loop"]))
        ctx.skips.load_state_dict(json.loads(ckpt["skips"]))
        ctx.checkpoint = ckpt
        ctx.emit("status", {"message": f"resuming after episode {ctx.state.episode} (step {ctx.state.step})"})
    else:
        first = probe_loss(ctx)
        ctx.state.prev_probe = ctx.state.initial_probe = reward_value(ctx, first)
        ctx.state.initial_terms = first
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "run.toml").write_text(_run_toml(ctx.cfg), encoding="utf-8")


def make_batches(ctx: RunContext) -> Iterator[Any]:
    """The training batches from the current data position. Small sources: a seeded permutation per
    epoch; streams (10^9 procedural items): in order from a seed-dependent offset, so every seed sees
    different data and no item repeats. The loader has its own generator, so creating it draws nothing
    from the global RNG (a resumed run's restored RNG state stays exact)."""
    train, seed = ctx.train, ctx.train["seed"]
    stream = len(ctx.train_ds) >= HUGE
    sampler = BatchSampler(len(ctx.train_ds), train["batch_size"], seed, shuffle=not stream,
                           steps=train["episodes"] * train["episode_steps"], start_step=ctx.state.batches,
                           offset=seed * 7_919 * 1_000_003 if stream else 0)
    loader = make_loader(ctx.train_ds, ctx.teacher.transform, ctx.teacher.tokenizer, sampler,
                         workers=ctx.cfg["data"]["workers"], pin_memory=ctx.device.type == "cuda",
                         generator=torch.Generator().manual_seed(seed))
    return iter(loader)


def train_step(ctx: RunContext, batch: Any, arm: tuple[str, ...], s_paths: list[str], t_paths: list[str],
               ep_sums: dict[str, torch.Tensor]) -> None:
    """One optimizer step on ``batch`` with only ``arm``'s layerwise terms; terms accumulate on device."""
    family, dev, dt = ctx.family, ctx.device, ctx.autocast_dtype
    inputs = family.inputs(batch, dev)
    tc = time.perf_counter()
    # teacher: frozen, no_grad (not inference_mode: its tensors are MSE targets)
    with torch.no_grad(), _autocast(dev, dt), HiddenStateTap(ctx.teacher_model, t_paths) as t_tap:
        t_out = family.forward(ctx.teacher_model, inputs)
    with _autocast(dev, dt), HiddenStateTap(ctx.student_model, s_paths) as s_tap:
        s_out = family.forward(ctx.student_model, inputs)
        terms = ctx.objective(s_out, t_out, s_tap.outputs, t_tap.outputs, inputs, arm)
    loss = terms["total"]
    if not torch.isfinite(loss):
        raise TrainingError(
            f"non-finite loss ({float(loss.detach())}) in episode {ctx.state.episode + 1}, step {ctx.state.step + 1}; "
            "lower --lr, keep train.grad_clip > 0, or use --precision fp32."
        )
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if ctx.train["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(ctx.trainable, ctx.train["grad_clip"])
    ctx.optimizer.step()
    ctx.scheduler.step()
    del s_out, t_out  # free logits before the next forward (peak memory)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    ctx.state.timings["compute_s"] += time.perf_counter() - tc
    ctx.state.step += 1
    ctx.state.samples += len(batch)
    for k, v in terms.items():  # accumulate on device: no host sync inside the episode
        ep_sums[k] = ep_sums[k] + v.detach() if k in ep_sums else v.detach()


def run_episode(ctx: RunContext, batches: Iterator[Any], episode: int) -> tuple[tuple[str, ...], dict[str, Any]]:
    """5a. Select an arm, train T steps on it, probe once, reward the policy; returns (arm, episode record)."""
    state, train = ctx.state, ctx.train
    burn_in = burn_in_arm(ctx, episode)
    arm_idx = ctx.policy.select(episode) if burn_in is None else burn_in
    arm = ctx.arms[arm_idx]
    s_paths, t_paths = ctx.objective.student_paths(arm), ctx.objective.teacher_paths(arm)  # only this arm's layers
    ep_sums: dict[str, torch.Tensor] = {}
    for _ in range(train["episode_steps"]):
        td = time.perf_counter()
        batch = next(batches)
        state.batches += 1
        ctx.skips.add(batch.skipped)
        if len(batch) == 0:  # every item of this step was unreadable: nothing to learn from
            continue
        state.timings["data_s"] += time.perf_counter() - td
        train_step(ctx, batch, arm, s_paths, t_paths, ep_sums)
    ep_terms = {k: float(v) / train["episode_steps"] for k, v in ep_sums.items()}
    # one probe evaluation per episode -> reward = relative decrement
    tp = time.perf_counter()
    probe = probe_loss(ctx)
    state.timings["probe_s"] += time.perf_counter() - tp
    p = reward_value(ctx, probe)
    if not math.isfinite(p):
        raise TrainingError(f"non-finite probe loss in episode {episode + 1}; lower --lr or use --precision fp32.")
    reward = (state.prev_probe - p) / state.prev_probe if state.prev_probe else 0.0
    state.prev_probe = p
    if burn_in is None:  # burn-in rewards are recorded, never fed to the policy
        ctx.policy.update(arm_idx, reward)
    return arm, {"episode": episode + 1, "arm": arm_name(arm), "reward": reward, "probe_loss": p, "probe": probe,
                 "train": ep_terms, "lr": ctx.scheduler.get_last_lr()[0], "step": state.step,
                 "posterior": ctx.policy.posterior(), "burn_in": burn_in is not None}


def burn_in_arm(ctx: RunContext, episode: int) -> int | None:
    """The arm of a burn-in episode, or None when the policy decides.

    An episode that starts while the learning rate is still warming up is a burn-in (unless
    ``loss.warmup_rewards``): its probe-loss drop mostly measures the warm-up and the student's
    recovery from initialisation, not the arm, so its reward would confound the bandit. Burn-in
    episodes cycle through the arms in an order drawn from the seed (the same for every policy, so
    policies compare fairly); their rewards are recorded but never fed to the policy.
    """
    train = ctx.train
    if ctx.cfg["loss"]["warmup_rewards"] or episode * train["episode_steps"] >= train["warmup_steps"]:
        return None
    order = list(range(len(ctx.arms)))
    random.Random(f"distillctl-burn-in:{train['seed']}").shuffle(order)
    return order[episode % len(order)]


def run_episodes(ctx: RunContext) -> None:
    """5. The episode loop: records, progress events, observers, checkpoints."""
    state, train = ctx.state, ctx.train
    batches = make_batches(ctx)
    if ctx.checkpoint is not None:  # after the loader exists: nothing may draw from the RNG once it is restored
        checkpoint.set_rng_state(ctx.checkpoint["rng"])
    timings = state.timings
    t_train = time.perf_counter() - timings["train_s"]
    ctx.emit("start", {"episodes": train["episodes"], "steps": train["episodes"] * train["episode_steps"],
                       "arms": [arm_name(a) for a in ctx.arms], "done": state.episode})
    for episode in range(state.episode, train["episodes"]):
        arm, record = run_episode(ctx, batches, episode)
        state.episodes.append(record)
        state.episode = episode + 1
        timings["train_s"] = time.perf_counter() - t_train
        ctx.emit("episode", {**record, "samples_per_s": state.samples / max(timings["train_s"], 1e-9)})
        call_observers("on_episode_end", episode=episode + 1, arm=arm, reward=record["reward"], probe_loss=record["probe_loss"],
                       state={"step": state.step, "losses": record["train"], "posterior": record["posterior"]})
        every = train["checkpoint_every"]
        if every and (episode + 1) % every == 0 and episode + 1 < train["episodes"]:
            save_checkpoint(ctx)
    timings["train_s"] = time.perf_counter() - t_train
    del batches


def finish(ctx: RunContext) -> dict[str, Any]:
    """6. Export (the family writes the files), evaluate, write the reports; returns the report.

    A failure after export (e.g. in an evaluator) keeps the student, records the error in
    ``report.json`` and is raised as one line."""
    cfg, state = ctx.cfg, ctx.state
    assert ctx.teacher is not None
    assert ctx.rundir is not None
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    ctx.export = ctx.family.export(
        ctx.student_model, ctx.out_dir, model_config=ctx.student.model_config, source=ctx.teacher, dtype=cfg["export"]["dtype"],
        metadata={"teacher": ctx.teacher.name, "teacher_weights": str(ctx.teacher.weights),
                  "teacher_weights_hash": ctx.teacher.weights_hash, "policy": cfg["policy"]["name"],
                  "arms": cfg["policy"]["arms"], "steps": str(state.step), "seed": str(ctx.train["seed"])},
    )
    ctx.rundir.mark_exported()  # from here on a failure removes nothing (the student is of value)
    from distillctl.report import write_reports

    error = None
    try:
        evaluation = evaluate_models(ctx)
    except Exception as exc:  # noqa: BLE001 - the student is saved: record the failure, then report it
        evaluation, error = {}, _one_line(exc)
    report = build_report(ctx, evaluation, error=error)
    write_reports(report, ctx.out_dir)
    if error is not None:
        raise DistillctlError(f"evaluation failed after the student was saved ({ctx.out_dir}/student.safetensors, "
                              f"report.json): {error}")
    if ctx.ckpt_path.parent.is_dir():  # the run is complete: its resume state is no longer needed
        shutil.rmtree(ctx.ckpt_path.parent, ignore_errors=True)
    call_observers("on_run_end", out_dir=str(ctx.out_dir), report=report)
    return report


# --------------------------------------------------------------------------------------- the run
class Run:
    """One distillation run. ``Run(cfg, out).execute()`` returns the report; after it, ``run.ctx``
    holds the live objects (teacher, student, policy) for callers that want them."""

    def __init__(self, cfg: dict[str, Any], out_dir: Path, *, overwrite: bool = False, resume: bool = False,
                 on_event: Emit | None = None) -> None:
        self.ctx = RunContext(cfg=cfg, out_dir=Path(out_dir), overwrite=overwrite, resume=resume,
                              emit=on_event or (lambda kind, payload: None))

    def execute(self) -> dict[str, Any]:
        ctx = self.ctx
        preflight(ctx)
        with _out_dir_guard(ctx):
            build_models(ctx)
            build_probe_set(ctx)
            build_training(ctx)
            restore_or_start(ctx)
            run_episodes(ctx)
            return finish(ctx)


def run(cfg: dict[str, Any], out_dir: Path, *, overwrite: bool = False, resume: bool = False,
        on_event: Emit | None = None) -> dict[str, Any]:
    """Run a validated config; write artifacts to ``out_dir``; return the report dict.

    ``resume=True`` continues from ``out_dir/checkpoints/last.pt`` (written every
    ``train.checkpoint_every`` episodes) bit-exactly: same arms, same data, same student.
    """
    return Run(cfg, out_dir, overwrite=overwrite, resume=resume, on_event=on_event).execute()


@contextlib.contextmanager
def _out_dir_guard(ctx: RunContext) -> Iterator[None]:
    """The one cleanup rule (:meth:`distillctl.rundir.RunDir.session`): the run owns ``out_dir`` (a lock);
    before export, a failure removes only what this run created (a resumable checkpoint is kept, a run
    replaced with ``--overwrite`` comes back); after export, nothing of value is removed (``finish``
    recorded the error)."""
    assert ctx.rundir is not None
    with ctx.rundir.session():
        yield


def save_checkpoint(ctx: RunContext) -> None:
    """Atomic, checksummed, fingerprinted; the previous checkpoint is kept as ``prev.pt``."""
    assert ctx.rundir is not None
    blob = {
        "student": ctx.student_model.state_dict(),
        "projections": ctx.projections.state_dict(),
        "optimizer": ctx.optimizer.state_dict(),
        "scheduler": ctx.scheduler.state_dict(),
        "policy": json.dumps(ctx.policy.state_dict()),
        "loop": json.dumps(ctx.state.to_dict()),
        "rng": checkpoint.rng_state(),
        "skips": json.dumps(ctx.skips.state_dict()),
    }
    checkpoint.save(ctx.rundir.checkpoint_dir, blob, fingerprint=ctx.fingerprint)


def _run_toml(cfg: dict[str, Any]) -> str:
    head = f"# resolved config written by distillctl {__version__}\n# run: distillctl distill --preset PATH/TO/run.toml\n\n"
    return head + dumps_toml(cfg)


def _one_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, DistillctlError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


# --------------------------------------------------------------------------------------- eval + report
def evaluator_names(cfg: dict[str, Any], family: Any) -> list[str]:
    """``eval.evaluators``, or the family's default (its first applicable evaluator) when unset."""
    names = cfg["eval"]["evaluators"]
    if names is None:
        return list(getattr(family, "evaluators", ())[:1])
    return list(names)


def evaluate_models(ctx: RunContext) -> dict[str, dict[str, float]]:
    """Every evaluator on the student (and the teacher, side by side), through the family's forwards."""
    ev, teacher = ctx.cfg["eval"], ctx.teacher
    assert teacher is not None
    names = evaluator_names(ctx.cfg, ctx.family)
    if not names:
        return {}
    try:
        ds = registry("dataset").create(ctx.cfg["data"]["name"], split=ev["split"], **component_options(ctx.cfg["data"], "data"))
    except DistillctlError as exc:
        ctx.emit("status", {"message": f"eval skipped: {exc}"})
        return {}
    student = replace(teacher, name="student", model=ctx.student_model,
                      extra={**teacher.extra, "layer_map": ctx.student.layer_map})  # fidelity pairs the run's layers
    return evaluate_bundles(names, ctx.family, ds, student, teacher if ev["teacher"] else None,
                            device=str(ctx.device), samples=ev["samples"], emit=ctx.emit, options=ev.get("options"))


def evaluate_bundles(names: list[str], family: Any, dataset: Any, student: Teacher, teacher: Teacher | None, *,
                     device: str, samples: int, emit: Emit | None = None, options: dict[str, Any] | None = None,
                     notes: list[str] | None = None) -> dict[str, dict[str, float]]:
    """``{"student": {...}, "teacher": {...}}`` (``teacher`` only when given); shared by ``distill`` and ``eval``.

    ``options`` is ``{evaluator: {option: value}}`` (``eval.options``); the evaluators' one-line remarks
    (tokenisation used, decoding, ...) are appended to ``notes`` when given."""
    out: dict[str, dict[str, float]] = {"student": {}, **({"teacher": {}} if teacher is not None else {})}
    for name in names:
        entry = registry("evaluator").get(name)
        opts = (options or {}).get(entry.name) or (options or {}).get(name) or {}
        evaluator = registry("evaluator").create(name, **dict(opts))
        if emit is not None:
            emit("status", {"message": f"evaluating ({name}) on {dataset.describe()}"})
        ctx = EvalContext(family=family, dataset=dataset, device=device, samples=samples, teacher=teacher,
                          notes=notes if notes is not None else [])
        out["student"].update(evaluator.evaluate(student, ctx))
        if teacher is not None:
            out["teacher"].update(evaluator.evaluate(teacher, ctx))
            if hasattr(evaluator, "evaluate_pair"):
                out["student"].update(evaluator.evaluate_pair(student, teacher, ctx))
    return out


def build_report(ctx: RunContext, evaluation: dict[str, dict[str, float]], *, error: str | None = None) -> dict[str, Any]:
    """``report.json``: the truth that every view (terminal, Markdown, HTML) renders."""
    cfg, state, teacher = ctx.cfg, ctx.state, ctx.teacher
    assert teacher is not None and ctx.export is not None and ctx.projections is not None
    pulls = {arm_name(a): 0 for a in ctx.arms}
    reward_sums = {arm_name(a): 0.0 for a in ctx.arms}
    for e in state.episodes:
        pulls[e["arm"]] += 1
        reward_sums[e["arm"]] += e["reward"]
    arms_table = [{"arm": n, "pulls": pulls[n], "mean_reward": (reward_sums[n] / pulls[n]) if pulls[n] else None}
                  for n in pulls]
    t_params, s_params = (sum(p.numel() for p in m.parameters()) for m in (teacher.model, ctx.student_model))
    timings = {**state.timings, "total_s": time.perf_counter() - ctx.t_start}
    report = {
        "distillctl_version": __version__,
        "config": cfg,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "device": str(ctx.device),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "family": ctx.family.name,
        "teacher": {"name": teacher.name, "weights": teacher.weights, "weights_hash": teacher.weights_hash,
                    "params": t_params},
        "student": {"params": s_params, "description": ctx.student.description,
                    "layer_map": ctx.student.layer_map, "projections": len(ctx.projections),
                    "layer_pairs": {m: [list(p) for p in v] for m, v in ctx.pairs.items()}},
        "sizes": {"teacher_params": t_params, "student_params": s_params, "compression": t_params / max(s_params, 1),
                  **ctx.export},
        "arms": arms_table,
        "episodes": state.episodes,
        "initial_probe": state.initial_terms,
        "final_probe": state.episodes[-1]["probe"] if state.episodes else state.initial_terms,
        "steps": state.step,
        "samples": state.samples,
        "timings": {**{k: round(v, 3) for k, v in timings.items()},
                    "samples_per_s": state.samples / max(timings["train_s"], 1e-9),
                    "compute_fraction": timings["compute_s"] / max(timings["train_s"], 1e-9)},
        "eval": evaluation,
        "skipped": {"count": ctx.skips.count, "first": ctx.skips.first, "summary": ctx.skips.summary()},
        "policy_state": ctx.policy.state_dict(),
    }
    if error is not None:
        report["error"] = error
    return report


__all__ = ["LoopState", "Objective", "Run", "RunContext", "build_report", "evaluate_bundles", "run", "save_checkpoint"]
