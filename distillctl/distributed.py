"""Rank logic on PyTorch's own stack: ``torchrun`` env vars, ``torch.distributed``, DDP and FSDP2.

One process per device, started by ``torchrun`` (or ``distillctl distill --nproc N``, which runs
``torch.distributed.run`` for the user). :func:`init` reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
without them (plain ``distillctl distill``) it returns a one-process :class:`Dist` and nothing here
does any communication, so a single-process run pays nothing.

What the engine relies on:

- **backend**: NCCL when the run's device is CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on CPU.
- **timeout**: every collective gives up after ``DISTILLCTL_DIST_TIMEOUT`` seconds (default 60), so
  a rank whose peer died ends with an error instead of waiting forever (torchrun normally ends it
  first: it tears down every rank as soon as one exits non-zero).
- **who decides**: the policy's arm is chosen on rank 0 and broadcast (:func:`broadcast_int`); the
  probe loss and the episode's train terms are averaged over ranks (:func:`all_reduce_mean`), so
  every rank computes the same reward and updates an identical policy.
- **who writes**: only rank 0 (``is_main``) writes artifacts, reports and checkpoints and emits
  progress events.
- **the wrapper**: :class:`Trainable` holds the student and its projections and runs a closure as
  its forward, so DDP sees the whole training forward. The engine keeps the *raw* student as
  ``ctx.student_model`` (hooks, layer paths, export, checkpoints never see DDP's ``module.``
  prefix). DDP runs with ``find_unused_parameters=True``: an episode trains one arm, so the
  projections of the other modules get no gradient in that step (a static graph is impossible).

Collectives use tensors on the run's device (NCCL cannot reduce CPU tensors); each costs one host
synchronisation, and the engine calls them once per episode, never per step.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distillctl.errors import DistillctlError

DEFAULT_TIMEOUT_S = 60.0


class DistributedError(DistillctlError):
    """A distributed setup that cannot work (bad env vars, a backend missing, FSDP unsupported)."""


@dataclass
class Dist:
    """Where this process stands: rank, world size, local rank, backend (None = one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's rank from torchrun's env (0 without it); cheap: no torch.distributed call."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def timeout_s() -> float:
    raw = os.environ.get("DISTILLCTL_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"DISTILLCTL_DIST_TIMEOUT must be a number of seconds, got {raw!r}.") from None
    if value <= 0:
        raise DistributedError(f"DISTILLCTL_DIST_TIMEOUT must be positive, got {raw!r}.")
    return value


def init(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (idempotent); returns (Dist, this rank's device).

    ``device`` is the run's device (``train.device`` resolved); on CUDA each rank takes
    ``cuda:LOCAL_RANK``."""
    world = env_world_size()
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    try:
        int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise DistributedError("WORLD_SIZE > 1 but RANK is not set: launch with torchrun (or distillctl distill --nproc N).") from None
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) on this node; "
                                   "use --nproc_per_node <= the number of GPUs.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_available() or (backend == "nccl" and not dist.is_nccl_available()) or (
            backend == "gloo" and not dist.is_gloo_available()):
        raise DistributedError(f"this PyTorch build has no {backend} backend; it cannot run {world} processes on {device.type}.")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s())}
        if backend == "nccl":
            kwargs["device_id"] = device  # eager NCCL init: a bad GPU fails here, not in the first collective
        dist.init_process_group(**kwargs)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, backend=backend), device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # every rank leaves together: a rank that tears its process group down while rank 0 is still
        # exporting and evaluating can abort in gloo's destructor ("terminate called without an active
        # exception"); gloo's monitored barrier takes its own, generous timeout
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(hours=2))
            else:
                dist.barrier()
        except RuntimeError:
            pass  # a rank that died is reported by torchrun; nothing to wait for
        dist.destroy_process_group()


# --------------------------------------------------------------------------- collectives
def broadcast_int(value: int, d: Dist, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank (the policy's arm)."""
    if not d.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def all_reduce_mean(values: dict[str, float], d: Dist, device: torch.device, *, weight: float = 1.0) -> dict[str, float]:
    """The weighted mean over ranks of a float dict (keys sorted, so every rank must pass the same
    keys). ``weight`` is this rank's share (e.g. how many probe batches it evaluated; 0 = none)."""
    if not d.enabled:
        return dict(values)
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    total = float(t[-1].item())
    mean = {k: float(v) / total if total else float("nan") for k, v in zip(keys, t[:-1].tolist(), strict=True)}
    return {k: mean[k] for k in values}  # the caller's order (reports show "total" first)


def all_reduce_sum_int(value: int, d: Dist, device: torch.device) -> int:
    if not d.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t.item())


def all_gather_object(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj`` (small, picklable: skip counters), in rank order."""
    if not d.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def keys_agree(keys: list[str], d: Dist) -> bool:
    """Whether every rank passes the same keys (checked before a dict reduce would mismatch)."""
    return all(k == keys for k in all_gather_object(keys, d))


# --------------------------------------------------------------------------- wrappers
class Trainable(nn.Module):
    """The student and its projections as one module whose forward runs a closure.

    DDP must see the whole training forward (student forward + layerwise projections + loss) to
    find the parameters an episode leaves unused; the closure does exactly what the single-process
    engine does, on the raw modules."""

    def __init__(self, student: nn.Module, projections: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.projections = projections

    def forward(self, fn: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return fn()


def wrap_ddp(student: nn.Module, projections: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """DDP over student + projections (gradients averaged over ranks in backward)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    module = Trainable(student, projections)
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=True)  # per-episode arms leave other modules' projections unused


def fsdp_support(d: Dist, device: torch.device) -> str | None:
    """None when ``--fsdp`` can run here, else why not (one line).

    FSDP2 (``fully_shard``) needs ``torch.distributed.fsdp.fully_shard`` (torch >= 2.6 exports it
    there), at least two processes (it shards over the ranks) and a CUDA or CPU device; on CPU it
    runs over gloo (measured with torch 2.14: forward, backward, AdamW, full state dicts)."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return (f"--fsdp needs torch.distributed.fsdp.fully_shard (FSDP2, torch >= 2.6); this PyTorch is {torch.__version__}: "
                "upgrade torch, or run without --fsdp (DDP).")
    if not d.enabled:
        return ("--fsdp shards the models over several processes: launch with torchrun --nproc_per_node N (N >= 2) "
                "or distillctl distill --nproc N.")
    if device.type not in ("cuda", "cpu"):
        return f"--fsdp runs on cuda or cpu devices, not {device.type}."
    return None


def shard_fsdp(model: nn.Module, layer_paths: list[str], device: torch.device, *,
               reshard_after_forward: bool = True) -> list[nn.Parameter]:
    """FSDP2: ``fully_shard`` every listed layer (the splitter's blocks), then the model itself.

    In place: parameters become DTensors sharded over the ranks; module names and hooks are unchanged
    (FSDP2 does not wrap: no ``module.`` or ``_fsdp_wrapped_module`` prefixes). ``fully_shard`` refuses
    scalar parameters (CoCa's ``logit_scale``): they stay replicated plain tensors, are returned, and
    their gradients are averaged by :func:`all_reduce_grads` after each backward."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    scalars = [p for p in model.parameters() if p.ndim == 0]
    modules = dict(model.named_modules())
    for path in layer_paths:
        fully_shard(modules[path], mesh=mesh, reshard_after_forward=reshard_after_forward, ignored_params=set(scalars))
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, ignored_params=set(scalars))
    return scalars


def all_reduce_grads(params: list[nn.Parameter], d: Dist) -> None:
    """Average the gradients of replicated parameters over ranks (FSDP's ignored scalars); no host sync."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not d.enabled:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)  # SUM: gloo has no AVG
    flat /= d.world_size
    for g, v in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(v.view_as(g))


def full_state_dict(model: nn.Module, d: Dist) -> dict[str, torch.Tensor]:
    """The unsharded state dict on CPU (a collective under FSDP: every rank must call it; rank 0 gets it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load an unsharded state dict into an FSDP2-sharded model (every rank holds ``state``)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def _container(student: nn.Module, projections: nn.Module) -> nn.Module:
    """Student and projections under one root, so optimizer state is keyed by their parameter names."""
    return Trainable(student, projections)


def optimizer_state(student: nn.Module, projections: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """FSDP: the full optimizer state keyed by parameter name, on CPU (a collective; rank 0 gets it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(_container(student, projections), optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(student: nn.Module, projections: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    """FSDP: load a full optimizer state written by :func:`optimizer_state` (every rank holds ``state``)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(_container(student, projections), optimizer, state,
                             options=StateDictOptions(full_state_dict=True))


__all__ = ["Dist", "DistributedError", "Trainable", "all_gather_object", "all_reduce_grads", "all_reduce_mean", "all_reduce_sum_int",
           "broadcast_int", "env_rank", "env_world_size", "fsdp_support", "full_state_dict", "init",
           "load_full_state_dict", "load_optimizer_state", "optimizer_state", "shard_fsdp", "shutdown", "timeout_s", "wrap_ddp"]
