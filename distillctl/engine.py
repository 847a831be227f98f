"""The distillation loop: module-wise adaptive layerwise distillation (OPTIMA), top to bottom.

``run(cfg, out_dir)`` is the whole job behind ``distillctl distill``. It calls named phases in order,
each reading and filling one typed :class:`RunContext`::

    0. preflight        out dir, teacher weights, trackers (--report-to), data sources, batch size -- before any
                        model is built; the trackers start right after, in the folder's session
    1. build_models     teacher (eval, frozen, no_grad forwards), family, splitter, student, layer pairs
    2. build_probe_set  fixed held-out batches; the teacher's probe outputs computed ONCE
    3. build_training   projections, objective, arms, policy, AdamW, schedule
    4. restore_or_start a checkpoint (``--resume``) or the first probe loss
    5. run_episodes     policy picks an arm -> T steps with only that arm's layerwise terms ->
                        one probe evaluation -> reward = relative probe-loss decrement -> policy.update
    6. finish           export (the family writes the files), evaluate, report

The engine is model-agnostic: it never imports a model library. Everything that depends on what
the model is -- inputs, forward, task loss, logit-level KD terms, position masks, export -- comes from
the run's **family** (:class:`distillctl.interfaces.Family`).

Under ``torchrun`` (:mod:`distillctl.distributed`) the same phases run on every rank: each rank
trains on its slice of every global batch (student + projections under DDP, or FSDP2 with
``train.fsdp``), rank 0 picks the arm and broadcasts it, the probe loss and train terms are averaged
over ranks (every rank gets the same reward), and only rank 0 owns ``out_dir`` and writes.

One cleanup rule, here and nowhere else (:func:`_out_dir_guard`): a failure before export removes only what this run created (a
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

from distillctl import __version__, checkpoint, distributed
from distillctl.config import component_options, dumps_toml, preflight_teacher, reward_loss
from distillctl.data.loader import (
    BatchSampler,
    RankSlice,
    SkipCounter,
    check_batch_size,
    check_usable,
    make_batch,
    make_loader,
    make_stream_loader,
)
from distillctl.errors import DistillctlError, TrainingError
from distillctl.interfaces import EvalContext, Teacher
from distillctl.layerwise import HiddenStateTap, build_projections, layer_pairs, masked_mse, projection_key
from distillctl.plugins import call_observers, registry
from distillctl.policies import arm_name, build_arms
from distillctl.rundir import RunDir
from distillctl.trackers import Trackers, create_trackers

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
    world_size: int = 1  # of the run that wrote this state (a resume under another world size is approximate)
    global_batch: int = 0  # world_size x per-rank batch: what one ``batches`` step drew from the stream
    timings: dict[str, float] = field(default_factory=lambda: {"data_s": 0.0, "compute_s": 0.0, "probe_s": 0.0, "train_s": 0.0})
    flops: int = 0  # training FLOPs spent so far, all ranks (exact integer sums: a FLOPs budget ends deterministically)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProbeBatch:
    """One fixed held-out batch: the family's inputs and the teacher's outputs / hidden states (computed once)."""

    inputs: dict[str, Any]
    teacher_out: dict[str, Any]
    teacher_hidden: dict[str, torch.Tensor]
    weight: float = 1.0  # 0: held only for shapes (a rank that owns no probe batch), not part of the probe loss


@dataclass
class RunContext:
    """What the phases share. Filled in phase order; a field is None until its phase has run."""

    cfg: dict[str, Any]
    out_dir: Path
    overwrite: bool = False
    resume: bool = False
    emit: Emit = field(default=lambda kind, payload: None)
    dist: distributed.Dist = field(default_factory=distributed.Dist)  # rank, world size (one process: 0, 1)
    ddp: Any = None  # DDP(Trainable(student, projections)) when world size > 1 (not with FSDP)
    spare_batch: Any = None  # a rank whose step batch is empty trains on this with weight 0 (DDP lock-step)
    samples_base: int = 0  # state.samples already summed over ranks (see _sync_counters)
    cuda_events: list[tuple[Any, Any]] = field(default_factory=list)  # per-step (start, end): timed per episode
    local_arms: list[str] = field(default_factory=list)  # this rank's own policy choices, before rank 0's broadcast
    rank_arms: list[list[str]] = field(default_factory=list)  # every rank's arm sequence (gathered at the end)
    rank_choices: list[list[str]] = field(default_factory=list)  # every rank's own policy choices (gathered at the end)
    replicated: list[torch.nn.Parameter] = field(default_factory=list)  # FSDP: trainable params left unsharded (0-d)
    probe_keys: list[str] = field(default_factory=list)  # the probe loss's terms (a rank with no probe batch reduces zeros)
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
    plans: dict[tuple[str, ...], Any] = field(default_factory=dict)  # arm -> StepPlan (module-local) or None (full step)
    compute: dict[str, Any] = field(default_factory=dict)  # FLOPs per step of each arm, the budget (see count_flops)
    # 4-6. loop and finish
    state: LoopState = field(default_factory=LoopState)
    skips: SkipCounter = field(default_factory=SkipCounter)
    checkpoint: dict[str, Any] | None = None  # the loaded checkpoint on --resume
    fingerprint: str = ""  # config + model layouts; a checkpoint of another run is refused
    export: dict[str, Any] | None = None  # sizes, once the student is written
    trackers: Trackers = field(default_factory=Trackers)  # --report-to (rank 0 only; empty: every call returns at once)

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


def compute_lr_lambda(warmup: int, min_ratio: float, progress: Callable[[], float]) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then a cosine over the fraction of the compute budget spent
    (``progress()``, read when the scheduler steps: after the step's FLOPs are counted)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = min(1.0, max(0.0, progress()))
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


def _zero_like(outputs: dict[str, Any]) -> torch.Tensor:
    """A scalar 0 on the device of the first tensor in ``outputs`` (a loss term a family does not have)."""
    device = next((v.device for v in outputs.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    return torch.zeros((), device=device)


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

    def __call__(self, student_out: dict[str, Any] | None, teacher_out: dict[str, Any] | None,
                 student_hidden: dict[str, torch.Tensor], teacher_hidden: dict[str, torch.Tensor], inputs: dict[str, Any],
                 modules: tuple[str, ...], *, terms: bool = True) -> dict[str, torch.Tensor]:
        """``terms=False`` (a module-local step whose forward cannot give them): layerwise terms only."""
        c = self.cfg
        task_terms = self.family.task_loss(student_out, inputs) if terms else {}
        kd_terms = self.family.kd_terms(student_out, teacher_out, inputs, temperature=c["temperature"]) if terms else {}
        zero = _zero_like(student_out if terms else student_hidden)
        task = sum(task_terms.values()) if task_terms else zero  # a family may have no task term (unlabelled data)
        kd = sum(kd_terms.values()) if kd_terms else zero
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
    """0. Cheap checks before anything is built or written: out dir, teacher weights, trackers, data, batch size."""
    train = ctx.train
    # first: an --out this run may not use (in use, holds a run, unwritable, full disk) costs nothing
    ctx.rundir = RunDir(ctx.out_dir, overwrite=ctx.overwrite, resume=ctx.resume)
    if distributed.env_rank() == 0:  # only rank 0 owns --out (the lock, the files, the cleanup rule)
        ctx.rundir.preflight()
    preflight_teacher(ctx.cfg)
    # under torchrun: join the process group (NCCL on CUDA with each rank on cuda:LOCAL_RANK, gloo on CPU)
    ctx.dist, ctx.device = distributed.init(resolve_device(train["device"]))
    if not ctx.dist.is_main:  # progress, warnings and observers come from rank 0 only
        ctx.emit = lambda kind, payload: None
    else:  # --report-to: each tracker's library imported and its options checked now, before any model is built
        ctx.trackers = create_trackers(ctx.cfg, emit=ctx.emit)
    if train["fsdp"]:
        why = distributed.fsdp_support(ctx.dist, ctx.device)
        if why is not None:
            raise distributed.DistributedError(why)
    if train["threads"]:
        torch.set_num_threads(train["threads"])
    ctx.autocast_dtype = torch.bfloat16 if train["precision"] == "bf16" else None
    datasets = registry("dataset")
    data_opts = component_options(ctx.cfg["data"], "data")
    name = ctx.cfg["data"]["name"]
    ctx.train_ds = datasets.create(name, split="train", **data_opts)
    check_usable(ctx.train_ds)
    check_batch_size(ctx.train_ds, train["batch_size"] * ctx.dist.world_size)  # one global batch of distinct items
    try:  # held-out data for the probe: the source's ``val`` split (every built-in has one)
        ctx.probe_ds = datasets.create(name, split="val", **data_opts)
    except DistillctlError:
        ctx.probe_ds = ctx.train_ds
    check_usable(ctx.probe_ds)
    # default probe batch = the GLOBAL batch, so a 2 x (B/2) run probes exactly like a 1 x B run
    ctx.probe_bs = min(train["probe_batch_size"] or train["batch_size"] * ctx.dist.world_size, len(ctx.probe_ds))
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
    if ctx.train["fsdp"]:  # FSDP2: each block, then the whole model, sharded over the ranks -- the teacher too
        for model, modules in ((ctx.teacher_model, t_modules), (ctx.student_model, s_modules)):
            blocks = [st.layer(i) for m in modules for st in m.stacks for i in range(st.depth)]
            scalars = distributed.shard_fsdp(model, blocks, ctx.device)
            ctx.replicated += [p for p in scalars if p.requires_grad]  # FSDP2 cannot shard 0-d params
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
    n, bs, d = len(ctx.probe_ds), ctx.probe_bs, ctx.dist
    n_probe = ctx.train["probe_batches"]
    # DDP: rank r probes batches r, r+W, ... and the loss is averaged over ranks (each rank caches only its
    # share). FSDP: sharded models compute in lock-step, so every rank runs every probe batch. A rank with
    # no share keeps batch 0 with weight 0: the widths forward of build_training needs one batch.
    owned = range(n_probe) if ctx.train["fsdp"] or not d.enabled else range(d.rank, n_probe, d.world_size)
    host = ctx.train["probe_cache"] == "host"  # pinned host memory: the device keeps only the batch in use
    for b, weight in [(b, 1.0) for b in owned] or [(0, 0.0)]:
        batch = make_batch(ctx.probe_ds, [i % n for i in range(b * bs, (b + 1) * bs)], teacher.transform, teacher.tokenizer)
        ctx.spare_batch = ctx.spare_batch or batch
        inputs = family.inputs(batch, ctx.device)
        with torch.no_grad(), _autocast(ctx.device, ctx.autocast_dtype), HiddenStateTap(ctx.teacher_model, all_t) as tap:
            t_out = family.forward(ctx.teacher_model, inputs)
        pb = ProbeBatch(inputs, _detach(t_out), {k: v.detach() for k, v in tap.outputs.items()}, weight)
        ctx.probe_batches.append(_probe_to_host(pb) if host else pb)


def _move(value: Any, device: torch.device | None) -> Any:
    """Tensors of a (nested) dict to ``device`` (None = pinned host memory when a GPU can use it)."""
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    if not isinstance(value, torch.Tensor):
        return value
    if device is None:
        host = value.detach().to("cpu")
        return host.pin_memory() if value.device.type == "cuda" else host
    return value.to(device, non_blocking=True)


def _probe_to_host(pb: ProbeBatch) -> ProbeBatch:
    return ProbeBatch(_move(pb.inputs, None), _move(pb.teacher_out, None), _move(pb.teacher_hidden, None), pb.weight)


def _probe_on(ctx: RunContext, pb: ProbeBatch) -> ProbeBatch:
    """The probe batch on the run's device (a no-op unless ``train.probe_cache = "host"``)."""
    if ctx.train["probe_cache"] != "host":
        return pb
    return ProbeBatch(_move(pb.inputs, ctx.device), _move(pb.teacher_out, ctx.device), _move(pb.teacher_hidden, ctx.device),
                      pb.weight)


def build_training(ctx: RunContext) -> None:
    """3. Projections (from one student probe forward: widths of every pair), objective, arms, policy, AdamW."""
    seed, train = ctx.train["seed"], ctx.train
    all_s = [s for m in ctx.module_names for s, _ in ctx.pairs[m]]
    first = _probe_on(ctx, ctx.probe_batches[0])
    with torch.no_grad(), HiddenStateTap(ctx.student_model, all_s) as tap:
        ctx.family.forward(ctx.student_model, first.inputs)
        widths = {s: (_tokens(tap.outputs[s]).shape[-1], _tokens(first.teacher_hidden[t]).shape[-1])
                  for m in ctx.module_names for s, t in ctx.pairs[m]}
    seed_everything(seed + 1)
    ctx.projections = build_projections(widths).to(ctx.device)
    if train["fsdp"]:  # each projection its own FSDP unit: one an episode leaves unused gets no gradient on any rank
        for proj in ctx.projections.values():
            ctx.replicated += distributed.shard_fsdp(proj, [], ctx.device)
    ctx.objective = Objective(ctx.cfg["loss"], ctx.family, ctx.pairs, ctx.projections)
    ctx.arms = build_arms(ctx.module_names, ctx.cfg["policy"]["arms"])
    ctx.policy = registry("policy").create(ctx.cfg["policy"]["name"], arms=ctx.arms, seed=seed,
                                           **component_options(ctx.cfg["policy"], "policy"))
    ctx.plans = step_plans(ctx)
    count_flops(ctx)
    # FSDP with replicated scalars: the per-parameter loop (foreach kernels cannot mix DTensors and tensors)
    ctx.optimizer = torch.optim.AdamW(param_groups([ctx.student_model, ctx.projections], train["weight_decay"]),
                                      lr=train["lr"], betas=(0.9, 0.98), foreach=False if ctx.replicated else None)
    if train["budget"] == "flops":  # the cosine runs over the compute spent (the number of steps depends on the arms)
        budget = ctx.compute["budget_flops"]
        schedule = compute_lr_lambda(train["warmup_steps"], train["min_lr_ratio"], lambda: ctx.state.flops / budget)
    else:
        schedule = lr_lambda(train["warmup_steps"], train["episodes"] * train["episode_steps"], train["min_lr_ratio"])
    ctx.scheduler = torch.optim.lr_scheduler.LambdaLR(ctx.optimizer, schedule)
    replicated = {id(p) for p in ctx.replicated}  # FSDP: sharded params are clipped together (DTensor norms);
    ctx.trainable = [p for g in ctx.optimizer.param_groups for p in g["params"] if id(p) not in replicated]
    if ctx.dist.enabled and not train["fsdp"]:  # DDP over the raw modules: the optimizer keeps the same parameters
        ctx.ddp = distributed.wrap_ddp(ctx.student_model, ctx.projections, ctx.dist, ctx.device)


def probe_loss(ctx: RunContext) -> dict[str, float]:
    """The full objective over ALL modules on the probe set, so rewards compare across arms."""
    assert ctx.objective is not None
    model = ctx.student_model
    all_s = [s for m in ctx.module_names for s, _ in ctx.pairs[m]]
    model.eval()
    owned = [pb for pb in ctx.probe_batches if pb.weight > 0]
    sums: dict[str, torch.Tensor] = {}
    with torch.no_grad(), _autocast(ctx.device, ctx.autocast_dtype), HiddenStateTap(model, all_s) as tap:
        for pb in owned:
            pb = _probe_on(ctx, pb)
            s_out = ctx.family.forward(model, pb.inputs)
            terms = ctx.objective(s_out, pb.teacher_out, tap.outputs, pb.teacher_hidden, pb.inputs, tuple(ctx.module_names))
            for k, v in terms.items():  # on device: one host transfer per probe, not per batch and term
                sums[k] = sums[k] + v.float() if k in sums else v.float()
    model.train()
    local = dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True)) if sums else {}
    if ctx.dist.enabled:  # the mean over every rank's probe batches: every rank gets the same reward
        local = local or {k: 0.0 for k in _probe_keys(ctx)}
        return distributed.all_reduce_mean({k: v / max(len(owned), 1) for k, v in local.items()}, ctx.dist, ctx.device,
                                           weight=float(len(owned)))
    return {k: v / len(owned) for k, v in local.items()}


def _probe_keys(ctx: RunContext) -> list[str]:
    """The probe loss's term names, for a rank that probes no batch (from one forward on its spare batch)."""
    if not ctx.probe_keys:
        pb = _probe_on(ctx, ctx.probe_batches[0])
        all_s = [s for m in ctx.module_names for s, _ in ctx.pairs[m]]
        with torch.no_grad(), _autocast(ctx.device, ctx.autocast_dtype), HiddenStateTap(ctx.student_model, all_s) as tap:
            s_out = ctx.family.forward(ctx.student_model, pb.inputs)
            terms = ctx.objective(s_out, pb.teacher_out, tap.outputs, pb.teacher_hidden, pb.inputs, tuple(ctx.module_names))
        ctx.probe_keys = list(terms)
    return ctx.probe_keys


def reward_value(ctx: RunContext, terms: dict[str, float]) -> float:
    return terms[reward_loss(ctx.cfg)]  # "total" | "layerwise" | "task"; "auto" resolved as validate() does


def restore_or_start(ctx: RunContext) -> None:
    """4. ``--resume``: everything the loop mutates comes back (models, optimizer, schedule, policy, data
    position, RNGs). Otherwise: the first probe loss. Then ``run.toml`` (what ``--resume`` reads back)."""
    assert ctx.rundir is not None
    ctx.fingerprint = checkpoint.fingerprint(ctx.cfg, {"student": ctx.student_model, "projections": ctx.projections})
    if ctx.resume:  # checksum + fingerprint verified; a damaged last.pt falls back to prev.pt
        # FSDP: full state dicts stay on the host (each rank copies only its shards onto its device)
        where = torch.device("cpu") if ctx.train["fsdp"] else ctx.device
        ckpt, note = checkpoint.load(ctx.rundir.checkpoint_dir, fingerprint=ctx.fingerprint, map_location=where)
        if note:
            ctx.emit("warning", {"message": note})
        if ctx.train["fsdp"]:  # full (unsharded) state dicts, as rank 0 wrote them: every rank loads its shards
            distributed.load_full_state_dict(ctx.student_model, ckpt["student"])
            distributed.load_full_state_dict(ctx.projections, ckpt["projections"])
            distributed.load_optimizer_state(ctx.student_model, ctx.projections, ctx.optimizer, ckpt["optimizer"])
        else:
            ctx.student_model.load_state_dict(ckpt["student"])
            ctx.projections.load_state_dict(ckpt["projections"])
            ctx.optimizer.load_state_dict(ckpt["optimizer"])
        ctx.scheduler.load_state_dict(ckpt["scheduler"])
        ctx.policy.load_state_dict(json.loads(ckpt["policy"]))
        ctx.state = LoopState(**json.loads(ckpt["loop"]))
        ctx.skips.load_state_dict(json.loads(ckpt["skips"]))
        ctx.checkpoint = ckpt
        ctx.samples_base = ctx.state.samples
        _rescale_data_position(ctx)
        ctx.emit("status", {"message": f"resuming after episode {ctx.state.episode} (step {ctx.state.step})"})
    else:
        first = probe_loss(ctx)
        ctx.state.prev_probe = ctx.state.initial_probe = reward_value(ctx, first)
        ctx.state.initial_terms = first
    ctx.state.world_size, ctx.state.global_batch = ctx.dist.world_size, ctx.train["batch_size"] * ctx.dist.world_size
    if ctx.dist.is_main:
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        (ctx.out_dir / "run.toml").write_text(_run_toml(ctx.cfg), encoding="utf-8")


def _rescale_data_position(ctx: RunContext) -> None:
    """A checkpoint of another world size: the stream position in samples is kept, so the data
    position is approximate (rounded to a whole new global batch); same world size: exact."""
    state, world = ctx.state, ctx.dist.world_size
    old_world = state.world_size or 1
    old_global = state.global_batch or ctx.train["batch_size"] * old_world
    new_global = ctx.train["batch_size"] * world
    if old_global == new_global:
        return
    position = state.batches * old_global  # samples drawn from the global stream so far
    state.batches = round(position / new_global)
    ctx.emit("warning", {"message": f"resuming {old_world} process(es) as {world}: global batch {old_global} -> {new_global}, "
                                    f"so the data position is approximate (sample {state.batches * new_global:,} "
                                    f"instead of {position:,} of the stream); arms and losses will differ from an "
                                    "uninterrupted run."})


def make_batches(ctx: RunContext) -> Iterator[Any]:
    """The training batches from the current data position. Small sources: a seeded permutation per
    epoch; streams (10^9 procedural items): in order from a seed-dependent offset, so every seed sees
    different data and no item repeats. The loader has its own generator, so creating it draws nothing
    from the global RNG (a resumed run's restored RNG state stays exact)."""
    train, seed = ctx.train, ctx.train["seed"]
    # the stream ends after the draws this run still needs (equal to the total for a fresh or same-world resume;
    # a resume under another world size starts at a rescaled position)
    if train["budget"] == "flops":  # at most what the cheapest arm's steps can spend of the rest of the budget
        cheapest = max(1, min(ctx.compute["step_flops"].values()))
        remaining = math.ceil(max(0, ctx.compute["budget_flops"] - ctx.state.flops) / cheapest)
        remaining += remaining // 4 + train["episode_steps"]  # slack: a step whose items were all unreadable spends nothing
    else:
        remaining = (train["episodes"] - ctx.state.episode) * train["episode_steps"]
    end = ctx.state.batches + remaining
    if getattr(ctx.train_ds, "streaming", False):  # shard streams (wds): each rank reads its own shards
        return iter(make_stream_loader(ctx.train_ds, ctx.teacher.transform, ctx.teacher.tokenizer,
                                       batch_size=train["batch_size"], rank=ctx.dist.rank, world_size=ctx.dist.world_size,
                                       start_step=ctx.state.batches, steps=end,
                                       seed=seed, workers=ctx.cfg["data"]["workers"], pin_memory=ctx.device.type == "cuda"))
    stream = len(ctx.train_ds) >= HUGE
    d = ctx.dist
    # one global index stream of world x per-rank batches; rank r reads slice r of each global batch, so a
    # 2 x (B/2) run sees exactly the batches of a 1 x B run
    sampler = BatchSampler(len(ctx.train_ds), train["batch_size"] * d.world_size, seed, shuffle=not stream,
                           steps=end, start_step=ctx.state.batches,
                           offset=seed * 7_919 * 1_000_003 if stream else 0)
    rank_sampler = RankSlice(sampler, d.rank, d.world_size) if d.enabled else sampler
    loader = make_loader(ctx.train_ds, ctx.teacher.transform, ctx.teacher.tokenizer, rank_sampler,
                         workers=ctx.cfg["data"]["workers"], pin_memory=ctx.device.type == "cuda",
                         generator=torch.Generator().manual_seed(seed), nice=ctx.device.type == "cpu")
    return iter(loader)


def train_step(ctx: RunContext, batch: Any, arm: tuple[str, ...], s_paths: list[str], t_paths: list[str],
               ep_sums: dict[str, torch.Tensor], *, weight: float = 1.0) -> None:
    """One optimizer step on ``batch`` with only ``arm``'s layerwise terms; terms accumulate on device.

    No host synchronisation: non-finite losses are found on the episode's sums (:func:`_episode_terms`),
    and on CUDA the compute time is taken with CUDA events, read once per episode. ``weight`` 0: this
    rank's own batch was empty, yet it must take part in the other ranks' DDP/FSDP step (zero gradient)."""
    dev = ctx.device
    inputs = ctx.family.inputs(batch, dev)
    tc = time.perf_counter()
    if dev.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        start.record()
    terms = step_terms(ctx, inputs, arm, ctx.plans.get(arm), s_paths, t_paths, ddp=ctx.ddp)
    loss = terms["total"] if weight == 1.0 else terms["total"] * weight
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if ctx.replicated:  # FSDP's unsharded scalars (e.g. logit_scale): average their gradients over ranks
        distributed.all_reduce_grads(ctx.replicated, ctx.dist)
    if ctx.train["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(ctx.trainable, ctx.train["grad_clip"])
    ctx.optimizer.step()
    ctx.state.flops += ctx.compute["step_flops"][arm_name(arm)]  # before the schedule reads it (FLOPs budget)
    ctx.scheduler.step()
    if dev.type == "cuda":
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        ctx.cuda_events.append((start, end))
    else:
        ctx.state.timings["compute_s"] += time.perf_counter() - tc
    ctx.state.step += 1
    if weight:
        ctx.state.samples += len(batch)
        ctx.trackers.log_step(ctx.state.step, terms, ctx.scheduler.get_last_lr()[0])  # kept on device until the episode ends
    for k, v in terms.items():  # accumulate on device: no host sync inside the episode
        v = v.detach() * weight if weight != 1.0 else v.detach()
        ep_sums[k] = ep_sums[k] + v if k in ep_sums else v


def step_terms(ctx: RunContext, inputs: dict[str, Any], arm: tuple[str, ...], plan: Any, s_paths: list[str],
               t_paths: list[str], *, ddp: Any = None) -> dict[str, torch.Tensor]:
    """The teacher's and the student's forwards for one step of ``arm`` -> the loss terms (with their graph).

    ``plan`` None: the full forwards (``family.forward``). A module-local :class:`~distillctl.interfaces.StepPlan`:
    only ``plan.forward`` (the parts that feed the arm's layers) and, when it cannot give the task/KD terms,
    each forward stops as soon as the arm's last hooked layer has run."""
    family, dev, dt = ctx.family, ctx.device, ctx.autocast_dtype
    forward = family.forward if plan is None else plan.forward
    terms = plan is None or plan.terms
    # teacher: frozen, no_grad (not inference_mode: its tensors are MSE targets)
    with torch.no_grad(), _autocast(dev, dt), HiddenStateTap(ctx.teacher_model, t_paths, stop=not terms) as t_tap:
        t_out = t_tap.run(forward, ctx.teacher_model, inputs)

    def student_terms() -> dict[str, torch.Tensor]:
        with _autocast(dev, dt), HiddenStateTap(ctx.student_model, s_paths, stop=not terms) as s_tap:
            s_out = s_tap.run(forward, ctx.student_model, inputs)  # freed on return: logits do not outlive the loss
            return ctx.objective(s_out, t_out, s_tap.outputs, t_tap.outputs, inputs, arm, terms=terms)

    # under DDP the forward runs inside the wrapper, which then averages the gradients over ranks in backward
    return ddp(student_terms) if ddp is not None else student_terms()


def step_plans(ctx: RunContext) -> dict[tuple[str, ...], Any]:
    """``train.forward = "arm"``: each arm's module-local plan from the family (None: the full step). Full steps
    for every arm with ``"full"``, for a family that declares no plans, and under FSDP (a sharded model runs
    its parts only through the root's forward)."""
    if ctx.train["forward"] != "arm":
        return {}
    plan_of = getattr(ctx.family, "step_plan", None)
    if plan_of is None:
        ctx.emit("warning", {"message": f"family {ctx.family.name!r} declares no module-local steps (step_plan): "
                                        "train.forward = 'arm' runs full steps."})
        return {}
    if ctx.train["fsdp"]:
        ctx.emit("warning", {"message": "train.forward = 'arm' runs full steps under --fsdp (sharded parts run only "
                                        "through the whole model's forward)."})
        return {}
    return {arm: plan_of(tuple(arm)) for arm in ctx.arms}


def _batch_size(inputs: dict[str, Any]) -> int | None:
    """The batch size of a family's inputs: the first dimension of the first batched tensor."""
    return next((int(v.shape[0]) for v in inputs.values() if isinstance(v, torch.Tensor) and v.ndim), None)


def _take(inputs: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` samples of a batch of inputs: tensors whose first dimension is the batch, and lists or
    tuples of one entry per sample (e.g. a classifier family's label strings)."""
    size = _batch_size(inputs) or n

    def take(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == size:
            return v[:n]
        if isinstance(v, (list, tuple)) and len(v) == size:
            return v[:n]
        return v

    return {k: take(v) for k, v in inputs.items()}


def count_flops(ctx: RunContext) -> None:
    """FLOPs of one training step of each arm (and of the full all-module step, and of one probe), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` over a real forward + backward of that step on 2 probe samples,
    scaled linearly to the per-rank batch and summed over ranks.

    What is counted: matrix products, convolutions and attention (the library's formulas), forward and backward;
    elementwise work, norms and the optimizer are not. The in-batch ``B x B`` similarity terms grow as B^2 but are
    a negligible share at these widths. PyTorch's fused attention fast path is switched off while counting (it has
    no FLOP formula; it does the same products). Nothing of the run changes: RNG states are restored, the
    gradients dropped and the student's buffers (e.g. BatchNorm statistics) put back. The budget
    (``train.budget_flops``, or ``episodes x episode_steps`` full all-module steps) is fixed here."""
    from torch.utils.flop_counter import FlopCounterMode

    first = _probe_on(ctx, ctx.probe_batches[0])
    n = min(2, _batch_size(first.inputs) or 2)  # counted on 2 samples, scaled to the batch
    inputs = _take(first.inputs, n)
    world, train = ctx.dist.world_size, ctx.train
    buffers = {k: v.detach().clone() for k, v in ctx.student_model.named_buffers()}
    all_modules = tuple(ctx.module_names)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    step_flops: dict[str, int] = {}
    try:
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            for key, arm, plan in [("<full>", all_modules, None), *((arm_name(a), a, ctx.plans.get(a)) for a in ctx.arms)]:
                with FlopCounterMode(display=False) as counter:
                    terms = step_terms(ctx, inputs, arm, plan, ctx.objective.student_paths(arm), ctx.objective.teacher_paths(arm))
                    terms["total"].backward()
                step_flops[key] = round(counter.get_total_flops() * train["batch_size"] / n) * world
                for p in [*ctx.student_model.parameters(), *ctx.projections.parameters()]:
                    p.grad = None
            ctx.student_model.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                ctx.family.forward(ctx.student_model, inputs)
            ctx.student_model.train()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        with torch.no_grad():
            for k, v in ctx.student_model.named_buffers():
                v.copy_(buffers[k])
    full = step_flops.pop("<full>")
    probe = round(counter.get_total_flops() * ctx.probe_bs / n) * train["probe_batches"]
    ctx.compute = {
        "budget": train["budget"],
        "budget_flops": round(train["budget_flops"]) or train["episodes"] * train["episode_steps"] * full,
        "full_step_flops": full,  # one step of every module with the full forward (plain layerwise distillation)
        "step_flops": step_flops,  # one step of each arm, as this run steps it (train.forward)
        "probe_flops": probe,  # one probe evaluation (every probe batch, student forward only)
        "forward": train["forward"],
        "module_local": sorted(arm_name(a) for a, p in ctx.plans.items() if p is not None),
        "counted_on": {"samples": n, "per_rank_batch": train["batch_size"], "world_size": world},
    }


def _episode_terms(ctx: RunContext, ep_sums: dict[str, torch.Tensor], episode: int, steps: int) -> dict[str, float]:
    """The episode's mean train terms (averaged over ranks): one host transfer per episode, and the
    non-finite check that used to cost a synchronisation every step."""
    values = torch.stack([v.float() for v in ep_sums.values()]).tolist() if ep_sums else []
    terms = {k: v / steps for k, v in zip(ep_sums, values, strict=True)}
    if ctx.cuda_events:  # the events of this episode have completed once the values above were read
        ctx.cuda_events[-1][1].synchronize()
        ctx.state.timings["compute_s"] += sum(s.elapsed_time(e) for s, e in ctx.cuda_events) / 1000
        ctx.cuda_events.clear()
    terms = distributed.all_reduce_mean(terms, ctx.dist, ctx.device)
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    if bad:  # every rank sees the same reduced values, so every rank stops here together
        raise TrainingError(
            f"non-finite training loss ({', '.join(bad[:3])}) in episode {episode + 1} (steps {ctx.state.step - steps + 1}-"
            f"{ctx.state.step}); lower --lr, keep train.grad_clip > 0, or use --precision fp32."
        )
    return terms


def run_episode(ctx: RunContext, batches: Iterator[Any], episode: int) -> tuple[tuple[str, ...], dict[str, Any]]:
    """5a. Select an arm, train T steps on it, probe once, reward the policy; returns (arm, episode record)."""
    state = ctx.state
    burn_in = burn_in_arm(ctx, episode)
    arm_idx = ctx.policy.select(episode) if burn_in is None else burn_in
    ctx.local_arms.append(arm_name(ctx.arms[arm_idx]))  # this rank's own choice (the report checks ranks agree)
    arm_idx = distributed.broadcast_int(arm_idx, ctx.dist, ctx.device)  # rank 0 decides for every rank
    arm = ctx.arms[arm_idx]
    s_paths, t_paths = ctx.objective.student_paths(arm), ctx.objective.teacher_paths(arm)  # only this arm's layers
    ep_sums: dict[str, torch.Tensor] = {}
    t_episode, compute_0, flops_0, steps = time.perf_counter(), state.timings["compute_s"], state.flops, 0
    for _ in range(episode_length(ctx, arm)):
        if budget_spent(ctx):  # a FLOPs budget can run out inside an episode: it ends there
            break
        steps += 1
        td = time.perf_counter()
        batch = next(batches)
        state.batches += 1
        ctx.skips.add(batch.skipped)
        if len(batch) == 0:  # every item of this step was unreadable: nothing to learn from
            if ctx.dist.enabled:  # ... but the other ranks' step needs this one (zero-weight step on a spare batch)
                train_step(ctx, ctx.spare_batch, arm, s_paths, t_paths, ep_sums, weight=0.0)
            continue
        state.timings["data_s"] += time.perf_counter() - td
        train_step(ctx, batch, arm, s_paths, t_paths, ep_sums)
    ep_terms = _episode_terms(ctx, ep_sums, episode, steps)
    compute_s = state.timings["compute_s"] - compute_0
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
                 "train": ep_terms, "lr": ctx.scheduler.get_last_lr()[0], "step": state.step, "steps": steps,
                 "flops": state.flops - flops_0, "flops_total": state.flops,
                 "compute_s": round(compute_s, 4), "probe_s": round(time.perf_counter() - tp, 4),
                 "wall_s": round(time.perf_counter() - t_episode, 4),
                 "posterior": ctx.policy.posterior(), "burn_in": burn_in is not None}


def episode_length(ctx: RunContext, arm: tuple[str, ...]) -> int:
    """Steps in an episode of ``arm``: ``episode_steps``; under a FLOPs budget, as many of this arm's steps as
    ``episode_steps`` full all-module steps cost (rounded up), so every episode spends the same compute and
    rewards compare arms per unit of compute (a cheap module-local arm trains more steps per episode)."""
    steps = ctx.train["episode_steps"]
    if ctx.train["budget"] != "flops":
        return steps
    return math.ceil(steps * ctx.compute["full_step_flops"] / max(1, ctx.compute["step_flops"][arm_name(arm)]))


def budget_spent(ctx: RunContext) -> bool:
    """Under ``train.budget = "flops"``: the training FLOPs spent have reached the budget (steps: never here)."""
    return ctx.train["budget"] == "flops" and ctx.state.flops >= ctx.compute["budget_flops"]


def run_finished(ctx: RunContext) -> bool:
    """The run's budget is spent: ``episodes`` episodes, or ``budget_flops`` of training compute."""
    if ctx.train["budget"] == "flops":
        return budget_spent(ctx)
    return ctx.state.episode >= ctx.train["episodes"]


def burn_in_arm(ctx: RunContext, episode: int) -> int | None:
    """The arm of a burn-in episode, or None when the policy decides.

    An episode that starts while the learning rate is still warming up is a burn-in (unless
    ``loss.warmup_rewards``): its probe-loss drop mostly measures the warm-up and the student's
    recovery from initialisation, not the arm, so its reward would confound the bandit. Burn-in
    episodes cycle through the arms in an order drawn from the seed (the same for every learning
    policy, so they compare fairly); their rewards are recorded but never fed to the policy. A policy
    whose choices never depend on rewards (``uses_rewards = False``: ``fixed-order``, ``uniform``)
    plays its own arms throughout.

    Burn-in never swallows a run: at most half of its episodes (rounded down) are burn-in, so a learning
    policy decides at least once in every run (3 episodes inside a long warm-up: one burn-in, two decisions).
    """
    train = ctx.train
    if ctx.cfg["loss"]["warmup_rewards"] or episode * train["episode_steps"] >= train["warmup_steps"]:
        return None
    if episode >= train["episodes"] // 2:  # the warm-up is longer than half the run: the policy decides the rest
        return None
    if not getattr(ctx.policy, "uses_rewards", True):  # fixed-order, uniform: nothing to confound
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
    flops_budget = train["budget"] == "flops"
    ctx.emit("start", {"episodes": train["episodes"], "steps": train["episodes"] * train["episode_steps"],
                       "arms": [arm_name(a) for a in ctx.arms], "done": state.episode,
                       # progress: episodes, or FLOPs spent of the budget
                       "total": ctx.compute["budget_flops"] if flops_budget else train["episodes"],
                       "completed": state.flops if flops_budget else state.episode,
                       "unit": "flops" if flops_budget else "episodes"})
    while not run_finished(ctx):
        episode = state.episode
        arm, record = run_episode(ctx, batches, episode)
        state.episodes.append(record)
        state.episode = episode + 1
        timings["train_s"] = time.perf_counter() - t_train
        # samples/s of the whole job: this rank's count x world size (summed exactly at checkpoints and the end)
        progress = {**record, "samples_per_s": state.samples * ctx.dist.world_size / max(timings["train_s"], 1e-9),
                    "completed": state.flops if flops_budget else state.episode,
                    "unit": "flops" if flops_budget else "episodes"}
        ctx.emit("episode", progress)
        if ctx.dist.is_main:  # observers see the run once, not once per rank
            call_observers("on_episode_end", episode=episode + 1, arm=arm, reward=record["reward"],
                           probe_loss=record["probe_loss"],
                           state={"step": state.step, "losses": record["train"], "posterior": record["posterior"]})
            ctx.trackers.log_episode(progress, [arm_name(a) for a in ctx.arms])  # one host transfer per episode
        every = train["checkpoint_every"]
        if every and (episode + 1) % every == 0 and not run_finished(ctx):
            save_checkpoint(ctx)  # every rank: counters are summed (and FSDP shards gathered); rank 0 writes
    timings["train_s"] = time.perf_counter() - t_train
    _sync_counters(ctx)
    ctx.rank_arms = [list(a) for a in distributed.all_gather_object([e["arm"] for e in state.episodes], ctx.dist)]
    ctx.rank_choices = [list(a) for a in distributed.all_gather_object(ctx.local_arms, ctx.dist)]
    del batches


def _sync_counters(ctx: RunContext) -> None:
    """Sum the ranks' sample counts and merge their skipped items (a collective: every rank calls it)."""
    if not ctx.dist.enabled:
        return
    delta = ctx.state.samples - ctx.samples_base
    ctx.state.samples = ctx.samples_base + distributed.all_reduce_sum_int(delta, ctx.dist, ctx.device)
    ctx.samples_base = ctx.state.samples
    for st in distributed.all_gather_object(ctx.skips.state_dict(), ctx.dist):
        ctx.skips.add([(i, st["first"] or "") for i in st["indices"]])


def finish(ctx: RunContext) -> dict[str, Any]:
    """6. Export (the family writes the files), evaluate, write the reports; returns the report.

    A failure after export (e.g. in an evaluator) keeps the student, records the error in
    ``report.json`` and is raised as one line."""
    cfg, state = ctx.cfg, ctx.state
    assert ctx.teacher is not None
    assert ctx.rundir is not None
    if ctx.train["fsdp"]:  # every rank: gather the sharded student; rank 0 exports and evaluates an unsharded copy
        _unshard_student(ctx)
    if not ctx.dist.is_main:  # rank 0 writes and evaluates; the other ranks are done
        return {"rank": ctx.dist.rank, "world_size": ctx.dist.world_size}
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    ctx.export = ctx.family.export(
        ctx.student_model, ctx.out_dir, model_config=ctx.student.model_config, source=ctx.teacher, dtype=cfg["export"]["dtype"],
        metadata={"teacher": ctx.teacher.name, "teacher_weights": str(ctx.teacher.weights),
                  "teacher_weights_hash": ctx.teacher.weights_hash, "policy": cfg["policy"]["name"],
                  "arms": cfg["policy"]["arms"], "steps": str(state.step), "seed": str(ctx.train["seed"])},
    )
    ctx.rundir.mark_exported()  # from here on a failure removes nothing (the student is of value)
    from distillctl.report import write_reports

    error, cause = None, None
    try:
        evaluation = evaluate_models(ctx)
    except Exception as exc:  # noqa: BLE001 - the student is saved: record the failure, then report it
        evaluation, error, cause = {}, _one_line(exc), exc
    report = build_report(ctx, evaluation, error=error)
    write_reports(report, ctx.out_dir)
    ctx.trackers.log_run_end(report, ctx.out_dir)  # evaluation, sizes; report.html as an artifact
    if error is not None:
        raise DistillctlError(f"evaluation failed after the student was saved ({ctx.out_dir}/student.safetensors, "
                              f"report.json): {error}") from cause  # DISTILLCTL_DEBUG=1: the evaluator's traceback
    if ctx.ckpt_path.parent.is_dir():  # the run is complete: its resume state is no longer needed
        shutil.rmtree(ctx.ckpt_path.parent, ignore_errors=True)
    call_observers("on_run_end", out_dir=str(ctx.out_dir), report=report)
    return report


def _unshard_student(ctx: RunContext) -> None:
    """FSDP: the full student state (a collective), loaded on rank 0 into a plain model built from the
    student's config (the family's ``build``); it must fit one device. The teacher stays sharded, so the
    side-by-side teacher evaluation is skipped under ``--fsdp`` (a documented limit)."""
    state = distributed.full_state_dict(ctx.student_model, ctx.dist)
    if not ctx.dist.is_main:
        return
    plain = ctx.family.build(ctx.student.model_config, device="cpu")
    plain.load_state_dict(state)
    ctx.student = replace(ctx.student, model=plain.to(ctx.device).eval())
    ctx.cfg = {**ctx.cfg, "eval": {**ctx.cfg["eval"], "teacher": False}}


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
        with _out_dir_guard(ctx), _tracking(ctx):
            build_models(ctx)
            build_probe_set(ctx)
            build_training(ctx)
            restore_or_start(ctx)
            run_episodes(ctx)
            report = finish(ctx)
        distributed.shutdown()
        return report


@contextlib.contextmanager
def _tracking(ctx: RunContext) -> Iterator[None]:
    """The trackers' run (``--report-to``), inside the folder's session: started before any model is built
    (config as hyperparameters), finished when the run ends; their local logs are kept if the run fails."""
    if not ctx.trackers:
        yield
        return
    with ctx.trackers.session(out_dir=ctx.out_dir, run_name=ctx.out_dir.resolve().name, config=ctx.cfg):
        assert ctx.rundir is not None
        for path in ctx.trackers.log_dirs:  # what a failed run leaves is what you want to look at
            with contextlib.suppress(ValueError):
                ctx.rundir.keep_on_failure.add(path.resolve().relative_to(ctx.out_dir.resolve()).parts[0])
        yield


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
    if not ctx.dist.is_main:  # only rank 0 owns the folder
        yield
        return
    with ctx.rundir.session():
        yield


def save_checkpoint(ctx: RunContext) -> None:
    """Atomic, checksummed, fingerprinted; the previous checkpoint is kept as ``prev.pt``.

    Under torchrun every rank calls it (sample counts and skips are summed over ranks, FSDP shards
    gathered into full state dicts) and rank 0 alone writes. The file has no rank or world-size
    layout in it, so any world size resumes it (the data position is exact for the same world size)."""
    assert ctx.rundir is not None
    _sync_counters(ctx)
    if ctx.train["fsdp"]:
        student, projections = (distributed.full_state_dict(m, ctx.dist) for m in (ctx.student_model, ctx.projections))
        optimizer = distributed.optimizer_state(ctx.student_model, ctx.projections, ctx.optimizer)
    else:
        student, projections, optimizer = ctx.student_model.state_dict(), ctx.projections.state_dict(), ctx.optimizer.state_dict()
    if not ctx.dist.is_main:
        return
    blob = {
        "student": student,
        "projections": projections,
        "optimizer": optimizer,
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
    from distillctl.registry import plugin_errors

    out: dict[str, dict[str, float]] = {"student": {}, **({"teacher": {}} if teacher is not None else {})}
    built = [build_evaluator(name, family, (options or {})) for name in names]  # all checked before any runs
    for name, entry, evaluator in built:
        if emit is not None:
            emit("status", {"message": f"evaluating ({name}) on {dataset.describe()}"})
        ctx = EvalContext(family=family, dataset=dataset, device=device, samples=samples, teacher=teacher,
                          notes=notes if notes is not None else [])
        with plugin_errors(entry, "evaluate", name=name):  # a plugin's failure is one line naming it
            out["student"].update(evaluator.evaluate(student, ctx))
            if teacher is not None:
                out["teacher"].update(evaluator.evaluate(teacher, ctx))
        if teacher is not None and hasattr(evaluator, "evaluate_pair"):
            with plugin_errors(entry, "evaluate_pair", name=name):
                out["student"].update(evaluator.evaluate_pair(student, teacher, ctx))
    return out


def build_evaluator(name: str, family: Any, options: dict[str, Any]) -> tuple[str, Any, Any]:
    """``(name, registry entry, evaluator)``: built with its ``eval.options``, its ``evaluate`` checked against
    the plugin API's signature (an evaluator written for 0.1 is refused in one line saying what changed),
    and ``applies_to(family)`` asked when it has one (absent: it applies; the evaluator raises a
    ``DistillctlError`` naming a family method it needs and does not find)."""
    from distillctl.config import old_evaluate_signature
    from distillctl.errors import PluginError
    from distillctl.registry import plugin_errors

    entry = registry("evaluator").get(name)
    opts = options.get(name) or options.get(entry.name) or {}  # as asked (PLUGIN/NAME of a shadowed one), else canonical
    evaluator = registry("evaluator").create(name, **dict(opts))
    if not callable(getattr(evaluator, "evaluate", None)):
        raise PluginError(f"{entry.describe(name)} has no evaluate(bundle, ctx) method; see plugins/README.md (Evaluator).")
    refusal = old_evaluate_signature(entry, evaluator.evaluate, name=name)
    if refusal is not None:
        raise PluginError(refusal)
    if hasattr(evaluator, "applies_to"):
        with plugin_errors(entry, "applies_to", name=name):
            applies = evaluator.applies_to(family)
        if not applies:
            usable = ", ".join(getattr(family, "evaluators", ())) or "none"
            raise DistillctlError(f"evaluator {name!r} does not apply to family {getattr(family, 'name', '?')!r} "
                                  f"(its applies_to says no); evaluators for this family: {usable}.")
    return name, entry, evaluator


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
        "distributed": {"world_size": ctx.dist.world_size, "backend": ctx.dist.backend,
                        "per_rank_batch": ctx.train["batch_size"], "global_batch": ctx.train["batch_size"] * ctx.dist.world_size,
                        "fsdp": ctx.train["fsdp"], "rank_arms": ctx.rank_arms or [[e["arm"] for e in state.episodes]],
                        # every rank's own policy chose what rank 0 broadcast (identical rewards -> identical policies)
                        "ranks_agree": all(c == ctx.rank_choices[0] for c in ctx.rank_choices)},
        "policy_state": ctx.policy.state_dict(),
        # training compute: FLOPs per step of each arm (count_flops), the budget and what was spent
        "compute": {**ctx.compute, "spent_flops": state.flops,
                    "probe_flops_total": ctx.compute.get("probe_flops", 0) * (len(state.episodes) + 1)},
        # episodes the policy chose (not burn-in): 0 means the run never tested the policy (the summary says so)
        "policy_decisions": sum(1 for e in state.episodes if not e.get("burn_in")),
    }
    if error is not None:
        report["error"] = error
    return report


__all__ = ["LoopState", "Objective", "Run", "RunContext", "build_report", "evaluate_bundles", "run", "save_checkpoint"]
