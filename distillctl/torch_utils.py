"""Small torch helpers used across families, students, ``inspect`` and plugins (public).

Import torch lazily: this module is imported by code that must stay fast to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distillctl.errors import DistillctlError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def count_params(model: Any, prefix: str = "") -> int:
    """Parameters whose name starts with ``prefix`` (works on meta models)."""
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def check_device(device: str) -> None:
    """One-line :class:`DistillctlError` for a device string torch cannot parse, or CUDA without CUDA."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DistillctlError(f"invalid device {device!r} ({exc}); use cpu, cuda, cuda:N or meta.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DistillctlError(f"device {device!r} requested but CUDA is not available; use device cpu.")


__all__ = ["check_device", "count_params", "model_device"]
