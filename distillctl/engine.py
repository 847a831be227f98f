"""The distillation loop: module-wise adaptive layerwise distillation (OPTIMA), top to bottom.

``run(cfg, out_dir)`` is the whole job behind ``distillctl distill``::

    0. preflight        out dir, data sources usable, batch size -- before any model is built
    1. models           teacher (eval, frozen, no_grad forwards), splitter, student, layer pairs
    2. probe            fixed held-out batches; the teacher's probe outputs computed ONCE
    3. policy + optim   arms from the splitter's modules; AdamW over student + projections
    4. episodes         policy picks an arm -> T steps with only that arm's layerwise terms ->
                        one probe evaluation -> reward = relative probe-loss decrement -> policy.update
    5. export           student.safetensors + open_clip_config.json, eval, report.json / report.md

All state a resume would need is explicit (``LoopState``), I/O happens only on the main process.
Library code only: raises DistillctlError subclasses, never prints (progress goes to ``on_event``).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillctl import __version__
from distillctl.config import component_options, dumps_toml, preflight_teacher
from distillctl.data.loader import BatchSampler, SkipCounter, check_batch_size, check_usable, make_loader
from distillctl.errors import DistillctlError, TrainingError
from distillctl.evaluation import collect
from distillctl.layerwise import HiddenStateTap, build_projections, layer_pairs, masked_mse, projection_key
from distillctl.losses import caption_kl, contrastive_kl, similarity
from distillctl.plugins import call_observers, registry
from distillctl.policies import arm_name, build_arms

RUN_MARKERS = ("report.json", "student.safetensors", "run.toml")
HUGE = 10**7  # data sources larger than this are streams: read in order, never permuted


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


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DistillctlError(f"--out {out} exists and is not a directory; choose another path.")
    if out.is_dir() and (out / "checkpoints" / "last.pt").exists() and not overwrite:
        raise DistillctlError(f"--out {out} holds an unfinished run; pass --resume to continue it, or --overwrite.")
    if out.is_dir() and any((out / m).exists() for m in RUN_MARKERS):
        if not overwrite:
            raise DistillctlError(f"--out {out} already holds a run; pass --overwrite to replace it or choose another --out.")
    if overwrite:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


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


# --------------------------------------------------------------------------------------- objective
class Objective:
    """Computes the loss terms for one batch, given which modules' layerwise terms are active."""

    def __init__(
        self,
        loss_cfg: dict[str, Any],
        pairs: dict[str, list[tuple[str, str]]],
        splitter: Any,
        projections: torch.nn.ModuleDict,
    ) -> None:
        import open_clip

        self.cfg = loss_cfg
        self.pairs = pairs
        self.splitter = splitter
        self.projections = projections
        self.task_loss = open_clip.CoCaLoss(
            caption_loss_weight=loss_cfg["caption_weight"], clip_loss_weight=loss_cfg["clip_weight"], pad_id=0
        )

    def student_paths(self, modules: tuple[str, ...]) -> list[str]:
        return [s for m in modules for s, _ in self.pairs[m]]

    def teacher_paths(self, modules: tuple[str, ...]) -> list[str]:
        return [t for m in modules for _, t in self.pairs[m]]

    def project(self, path: str, h: torch.Tensor) -> torch.Tensor:
        key = projection_key(path)
        return self.projections[key](h) if key in self.projections else h

    def __call__(
        self,
        student_out: dict[str, torch.Tensor],
        teacher_out: dict[str, torch.Tensor],
        student_hidden: dict[str, torch.Tensor],
        teacher_hidden: dict[str, torch.Tensor],
        text: torch.Tensor,
        modules: tuple[str, ...],
    ) -> dict[str, torch.Tensor]:
        c = self.cfg
        # task: CoCa's own contrastive + caption loss on the data
        parts = self.task_loss(**student_out, output_dict=True)
        task = parts["contrastive_loss"] + parts["caption_loss"]
        # logit KD: caption logits + contrastive similarity matrix (both width-independent)
        labels = student_out["labels"]  # [B, L-1]
        kd = caption_kl(student_out["logits"], teacher_out["logits"], labels, c["temperature"])
        if c["contrastive_kd_weight"]:
            s_sim = similarity(student_out["image_features"], student_out["text_features"], student_out["logit_scale"])
            t_sim = similarity(teacher_out["image_features"], teacher_out["text_features"], teacher_out["logit_scale"])
            kd = kd + c["contrastive_kd_weight"] * contrastive_kl(s_sim, t_sim, c["temperature"])  # [B, B] rows
        # layerwise: per module, mean over its layer pairs of the masked (normalised) MSE
        per_module: dict[str, torch.Tensor] = {}
        for m in modules:
            mask = self.splitter.position_mask(m, text)  # [B, L_m] or None (all positions)
            terms = [
                masked_mse(self.project(s, student_hidden[s]), teacher_hidden[t], mask, c["normalize_layers"])
                for s, t in self.pairs[m]
            ]
            per_module[m] = torch.stack(terms).mean()
        layerwise = torch.stack(list(per_module.values())).sum() if per_module else task.new_zeros(())
        total = c["w_task"] * task + c["w_kd"] * kd + c["w_lw"] * layerwise
        return {"total": total, "task": task, "kd": kd, "layerwise": layerwise, **{f"lw/{m}": v for m, v in per_module.items()}}


# --------------------------------------------------------------------------------------- the run
def run(
    cfg: dict[str, Any],
    out_dir: Path,
    *,
    overwrite: bool = False,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    keep: dict[str, Any] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run a validated config; write artifacts to ``out_dir``; return the report dict.

    ``keep``, if given, receives the live objects (teacher, student, policy) for callers and tests.
    ``resume=True`` continues from ``out_dir/checkpoints/last.pt`` (written every
    ``train.checkpoint_every`` episodes) bit-exactly: same arms, same data, same student.
    """
    emit = on_event or (lambda kind, payload: None)
    t_start = time.perf_counter()
    train, loss_cfg = cfg["train"], cfg["loss"]
    seed = train["seed"]

    # ---- 0. preflight: nothing is built (or written) before the cheap checks pass
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    if resume:
        if not ckpt_path.is_file():
            raise DistillctlError(f"nothing to resume in {out_dir}: no checkpoints/last.pt (set train.checkpoint_every).")
    else:
        check_out_dir(out_dir, overwrite)
    preflight_teacher(cfg)
    device = resolve_device(train["device"])
    if train["threads"]:
        torch.set_num_threads(train["threads"])
    autocast_dtype = torch.bfloat16 if train["precision"] == "bf16" else None
    datasets = registry("dataset")
    data_opts = component_options(cfg["data"], "data")
    data_name = cfg["data"]["name"]
    train_ds = datasets.create(data_name, split="train", **data_opts)
    check_usable(train_ds)
    check_batch_size(train_ds, train["batch_size"])
    probe_ds = _probe_dataset(datasets, data_name, data_opts, train_ds)
    probe_bs = train["probe_batch_size"] or train["batch_size"]
    check_usable(probe_ds)
    if probe_bs > len(probe_ds):
        probe_bs = len(probe_ds)
    total_steps = train["episodes"] * train["episode_steps"]
    emit("status", {"message": f"data: {train_ds.describe()}"})

    # ---- 1. models
    seed_everything(seed)
    t0 = time.perf_counter()
    teacher = registry("teacher").create(
        cfg["teacher"]["name"], weights=cfg["teacher"].get("weights"), device=str(device),
        **component_options(cfg["teacher"], "teacher"),
    )
    teacher_model = teacher.model.to(device).eval().requires_grad_(False)  # invariant, not a comment
    splitter_name = cfg["splitter"]["name"] if cfg["splitter"]["name"] != "auto" else teacher.splitter
    splitter = registry("splitter").create(splitter_name, **component_options(cfg["splitter"], "splitter"))
    seed_everything(seed)
    student = registry("student").create(
        cfg["student"]["name"], teacher=teacher, splitter=splitter, **component_options(cfg["student"], "student")
    )
    student_model = student.model.to(device).train()
    splitter.check_compatible(teacher_model, student_model)
    t_modules, s_modules = splitter.modules(teacher_model), splitter.modules(student_model)
    pairs = layer_pairs(t_modules, s_modules, student.layer_map)
    module_names = [m.name for m in s_modules]
    emit("status", {"message": f"models built in {time.perf_counter() - t0:.1f}s"})

    # ---- 2. probe set: fixed held-out batches, teacher outputs computed once
    transform, tokenizer = teacher.transform, teacher.tokenizer
    probe_batches = []
    for b in range(train["probe_batches"]):
        idx = [i % len(probe_ds) for i in range(b * probe_bs, (b + 1) * probe_bs)]
        images, text, _ = collect(probe_ds, idx, transform, tokenizer)
        images, text = images.to(device), text.to(device)
        all_t = [t for m in module_names for _, t in pairs[m]]
        with torch.no_grad(), _autocast(device, autocast_dtype), HiddenStateTap(teacher_model, all_t) as tap:
            t_out = teacher_model(images, text)
        probe_batches.append((images, text, _detach(t_out), {k: v.detach() for k, v in tap.outputs.items()}))

    # widths of every pair from one student probe forward -> projections where they differ
    all_s = [s for m in module_names for s, _ in pairs[m]]
    with torch.no_grad(), HiddenStateTap(student_model, all_s) as tap:
        student_model(probe_batches[0][0], probe_batches[0][1])
        widths = {s: (tap.outputs[s].shape[-1], probe_batches[0][3][t].shape[-1]) for m in module_names for s, t in pairs[m]}
    seed_everything(seed + 1)
    projections = build_projections(widths).to(device)
    objective = Objective(loss_cfg, pairs, splitter, projections)

    # ---- 3. policy, optimizer, schedule
    arms = build_arms(module_names, cfg["policy"]["arms"])
    policy = registry("policy").create(cfg["policy"]["name"], arms=arms, seed=seed, **component_options(cfg["policy"], "policy"))
    optimizer = torch.optim.AdamW(
        param_groups([student_model, projections], train["weight_decay"]), lr=train["lr"], betas=(0.9, 0.98)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(train["warmup_steps"], total_steps, train["min_lr_ratio"])
    )
    trainable = [p for g in optimizer.param_groups for p in g["params"]]

    def probe_loss() -> dict[str, float]:
        """The full objective over ALL modules on the probe set, so rewards compare across arms."""
        student_model.eval()
        sums: dict[str, float] = {}
        with torch.no_grad(), _autocast(device, autocast_dtype), HiddenStateTap(student_model, all_s) as tap:
            for images, text, t_out, t_hidden in probe_batches:
                s_out = student_model(images, text)
                terms = objective(s_out, t_out, tap.outputs, t_hidden, text, tuple(module_names))
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v) / len(probe_batches)
        student_model.train()
        return sums

    def reward_value(terms: dict[str, float]) -> float:
        return terms[loss_cfg["reward_loss"]]  # "total" | "layerwise" | "task"

    # ---- 4. episodes
    state = LoopState()
    if resume:  # everything the loop mutates comes back: models, optimizer, schedule, policy, RNGs, data position
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        student_model.load_state_dict(ckpt["student"])
        projections.load_state_dict(ckpt["projections"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        policy.load_state_dict(json.loads(ckpt["policy"]))
        state = LoopState(**json.loads(ckpt["loop"]))
        _set_rng_state(ckpt["rng"])
        emit("status", {"message": f"resuming after episode {state.episode} (step {state.step})"})
    else:
        first = probe_loss()
        state.prev_probe = state.initial_probe = reward_value(first)
        state.initial_terms = first
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run.toml").write_text(_run_toml(cfg), encoding="utf-8")  # what --resume reads back
    # small sources: a seeded permutation per epoch; streams (10^9 procedural items): in order from a
    # seed-dependent offset, so every seed sees different data and no item repeats
    stream = len(train_ds) >= HUGE
    sampler = BatchSampler(len(train_ds), train["batch_size"], seed, shuffle=not stream, steps=total_steps,
                           start_step=state.batches, offset=seed * 7_919 * 1_000_003 if stream else 0)
    loader = make_loader(train_ds, transform, tokenizer, sampler, workers=cfg["data"]["workers"], pin_memory=device.type == "cuda")
    batches = iter(loader)
    skips = SkipCounter()
    if resume:
        skips.load_state_dict(json.loads(ckpt["skips"]))
    timings = state.timings
    t_train = time.perf_counter() - timings["train_s"]
    emit("start", {"episodes": train["episodes"], "steps": total_steps, "arms": [arm_name(a) for a in arms],
                   "done": state.episode})
    for episode in range(state.episode, train["episodes"]):
        arm_idx = policy.select(episode)
        arm = arms[arm_idx]
        s_paths, t_paths = objective.student_paths(arm), objective.teacher_paths(arm)  # only this arm's layers
        ep_sums: dict[str, torch.Tensor] = {}
        for _ in range(train["episode_steps"]):
            td = time.perf_counter()
            batch = next(batches)
            state.batches += 1
            skips.add(batch.skipped)
            if len(batch) == 0:  # every item of this step was unreadable: nothing to learn from
                continue
            images = batch.images.to(device, non_blocking=True)  # [B, 3, H, W]
            text = batch.text.to(device, non_blocking=True)  # [B, L]
            tc = time.perf_counter()
            timings["data_s"] += tc - td
            # teacher: frozen, no_grad (not inference_mode: its tensors are MSE targets)
            with torch.no_grad(), _autocast(device, autocast_dtype), HiddenStateTap(teacher_model, t_paths) as t_tap:
                t_out = teacher_model(images, text)
            with _autocast(device, autocast_dtype), HiddenStateTap(student_model, s_paths) as s_tap:
                s_out = student_model(images, text)
                terms = objective(s_out, t_out, s_tap.outputs, t_tap.outputs, text, arm)
            loss = terms["total"]
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite loss ({float(loss.detach())}) in episode {episode + 1}, step {state.step + 1}; "
                    "lower --lr, keep train.grad_clip > 0, or use --precision fp32."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(trainable, train["grad_clip"])
            optimizer.step()
            scheduler.step()
            del s_out, t_out  # free logits before the next forward (peak memory)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings["compute_s"] += time.perf_counter() - tc
            state.step += 1
            state.samples += len(batch)
            for k, v in terms.items():  # accumulate on device: no host sync inside the episode
                ep_sums[k] = ep_sums[k] + v.detach() if k in ep_sums else v.detach()
        ep_terms = {k: float(v) / train["episode_steps"] for k, v in ep_sums.items()}
        # one probe evaluation per episode -> reward = relative decrement
        tp = time.perf_counter()
        probe = probe_loss()
        timings["probe_s"] += time.perf_counter() - tp
        p = reward_value(probe)
        if not math.isfinite(p):
            raise TrainingError(
                f"non-finite probe loss in episode {episode + 1}; lower --lr or use --precision fp32."
            )
        reward = (state.prev_probe - p) / state.prev_probe if state.prev_probe else 0.0
        state.prev_probe = p
        policy.update(arm_idx, reward)
        record = {
            "episode": episode + 1,
            "arm": arm_name(arm),
            "reward": reward,
            "probe_loss": p,
            "probe": probe,
            "train": ep_terms,
            "lr": scheduler.get_last_lr()[0],
            "step": state.step,
            "posterior": policy.posterior(),
        }
        state.episodes.append(record)
        state.episode = episode + 1
        timings["train_s"] = time.perf_counter() - t_train
        emit("episode", {**record, "samples_per_s": state.samples / max(timings["train_s"], 1e-9)})
        call_observers("on_episode_end", episode=episode + 1, arm=arm, reward=reward, probe_loss=p,
                       state={"step": state.step, "losses": ep_terms, "posterior": record["posterior"]})
        if train["checkpoint_every"] and (episode + 1) % train["checkpoint_every"] == 0 and episode + 1 < train["episodes"]:
            save_checkpoint(ckpt_path, student_model, projections, optimizer, scheduler, policy, state, skips)
    timings["train_s"] = time.perf_counter() - t_train
    del batches, loader
    if keep is not None:
        keep.update(teacher=teacher, student=student, student_model=student_model, policy=policy, arms=arms)

    # ---- 5. export, evaluate, report
    out_dir.mkdir(parents=True, exist_ok=True)
    from distillctl.export import export_student

    export = export_student(
        student_model, out_dir, student.model_config, teacher, dtype=cfg["export"]["dtype"],
        extra_metadata={"policy": cfg["policy"]["name"], "arms": cfg["policy"]["arms"], "steps": str(state.step),
                        "seed": str(seed)},
    )
    evaluation = evaluate_models(cfg, teacher, student_model, device, emit)
    report = build_report(
        cfg=cfg, teacher=teacher, student_model=student_model, student=student, arms=arms, policy=policy, state=state,
        initial=state.initial_terms, timings={**timings, "total_s": time.perf_counter() - t_start},
        samples=state.samples, device=device, export=export, evaluation=evaluation, skips=skips,
        projections=projections, pairs=pairs,
    )
    from distillctl.report import write_reports

    write_reports(report, out_dir)
    if ckpt_path.parent.is_dir():  # the run is complete: its resume state is no longer needed
        shutil.rmtree(ckpt_path.parent, ignore_errors=True)
    call_observers("on_run_end", out_dir=str(out_dir), report=report)
    return report


def save_checkpoint(path: Path, student_model: torch.nn.Module, projections: torch.nn.Module, optimizer: Any,
                    scheduler: Any, policy: Any, state: LoopState, skips: SkipCounter) -> None:
    """Atomic: write to a temporary file, then rename over ``last.pt`` (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "student": student_model.state_dict(),
        "projections": projections.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "policy": json.dumps(policy.state_dict()),
        "loop": json.dumps(state.to_dict()),
        "rng": _rng_state(),
        "skips": json.dumps(skips.state_dict()),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate()),
                           "numpy": json.dumps([np_state[1].tolist(), *np_state[2:]])}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    py = json.loads(rng["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    keys, pos, has_gauss, cached = json.loads(rng["numpy"])
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])


def _run_toml(cfg: dict[str, Any]) -> str:
    head = f"# resolved config written by distillctl {__version__}\n# run: distillctl distill --preset PATH/TO/run.toml\n\n"
    return head + dumps_toml(cfg)


def _probe_dataset(datasets: Any, name: str, opts: dict[str, Any], train_ds: Any) -> Any:
    """Held-out data for the probe: the source's ``val`` split (every built-in has one)."""
    try:
        return datasets.create(name, split="val", **opts)
    except DistillctlError:
        return train_ds


def _detach(out: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# --------------------------------------------------------------------------------------- eval + report
def evaluate_models(
    cfg: dict[str, Any], teacher: Any, student_model: torch.nn.Module, device: torch.device,
    emit: Callable[[str, dict[str, Any]], None],
) -> dict[str, dict[str, float]]:
    ev = cfg["eval"]
    if not ev["evaluators"]:
        return {}
    datasets = registry("dataset")
    data_opts = component_options(cfg["data"], "data")
    try:
        ds = datasets.create(cfg["data"]["name"], split=ev["split"], **data_opts)
    except DistillctlError as exc:
        emit("status", {"message": f"eval skipped: {exc}"})
        return {}
    out: dict[str, dict[str, float]] = {"student": {}, "teacher": {}}
    for name in ev["evaluators"]:
        evaluator = registry("evaluator").create(name, samples=ev["samples"])
        emit("status", {"message": f"evaluating ({name}) on {ds.describe()}"})
        out["student"].update(evaluator.evaluate(student_model, teacher.tokenizer, teacher.transform, ds, device=str(device)))
        if ev["teacher"]:
            out["teacher"].update(evaluator.evaluate(teacher.model, teacher.tokenizer, teacher.transform, ds, device=str(device)))
    if not ev["teacher"]:
        out.pop("teacher")
    return out


def build_report(**kw: Any) -> dict[str, Any]:
    cfg, state, arms, policy = kw["cfg"], kw["state"], kw["arms"], kw["policy"]
    pulls = {arm_name(a): 0 for a in arms}
    reward_sums = {arm_name(a): 0.0 for a in arms}
    for e in state.episodes:
        pulls[e["arm"]] += 1
        reward_sums[e["arm"]] += e["reward"]
    arms_table = [
        {"arm": n, "pulls": pulls[n], "mean_reward": (reward_sums[n] / pulls[n]) if pulls[n] else None}
        for n in pulls
    ]
    teacher, student_model = kw["teacher"], kw["student_model"]
    t_params, s_params = (sum(p.numel() for p in m.parameters()) for m in (teacher.model, student_model))
    timings = kw["timings"]
    return {
        "distillctl_version": __version__,
        "config": cfg,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "device": str(kw["device"]),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "teacher": {"name": teacher.name, "weights": teacher.weights, "weights_hash": teacher.weights_hash,
                    "params": t_params},
        "student": {"params": s_params, "description": kw["student"].description,
                    "layer_map": kw["student"].layer_map, "projections": len(kw["projections"]),
                    "layer_pairs": {m: [list(p) for p in v] for m, v in kw["pairs"].items()}},
        "sizes": {"teacher_params": t_params, "student_params": s_params, "compression": t_params / max(s_params, 1),
                  **kw["export"]},
        "arms": arms_table,
        "episodes": state.episodes,
        "initial_probe": kw["initial"],
        "final_probe": state.episodes[-1]["probe"] if state.episodes else kw["initial"],
        "steps": state.step,
        "samples": kw["samples"],
        "timings": {**{k: round(v, 3) for k, v in timings.items()},
                    "samples_per_s": kw["samples"] / max(timings["train_s"], 1e-9),
                    "compute_fraction": timings["compute_s"] / max(timings["train_s"], 1e-9)},
        "eval": kw["evaluation"],
        "skipped": {"count": kw["skips"].count, "first": kw["skips"].first, "summary": kw["skips"].summary()},
        "policy_state": policy.state_dict(),
    }


def remove_partial(out_dir: Path, created: bool) -> None:
    """Leave nothing half-written: remove a directory this run created, or our files in an existing one."""
    if created:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for name in ("student.safetensors", "open_clip_config.json", "report.json", "report.md", "run.toml"):
        with contextlib.suppress(OSError):
            (out_dir / name).unlink()


__all__ = ["LoopState", "Objective", "remove_partial", "run", "save_checkpoint"]
