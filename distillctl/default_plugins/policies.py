"""Built-in policies (registered through the same hook as any third-party plugin).

Factories take ``arms`` and ``seed`` (filled in by the run) plus their options as explicit keyword
parameters: config validation reads these signatures, so presets and ``--set policy.<key>=...``
are checked against them.
"""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


def optima(
    *,
    arms: list[tuple[str, ...]],
    seed: int = 0,
    window: int | None = None,
    sigma: float | None = None,
    prior_mean: float | None = None,
    prior_std: float | None = None,
    min_sigma_ratio: float = 0.1,
    warmup: bool = True,
) -> Any:
    """OPTIMA: sliding-window Thompson sampling over recent rewards (non-stationary bandit)."""
    from distillctl.policies import OptimaPolicy

    return OptimaPolicy(
        arms,
        seed,
        window=window,
        sigma=sigma,
        prior_mean=prior_mean,
        prior_std=prior_std,
        min_sigma_ratio=min_sigma_ratio,
        warmup=warmup,
    )


def uniform(*, arms: list[tuple[str, ...]], seed: int = 0) -> Any:
    """A uniformly random arm every episode (baseline)."""
    from distillctl.policies import UniformPolicy

    return UniformPolicy(arms, seed)


def fixed_order(*, arms: list[tuple[str, ...]], seed: int = 0, order: list[str] | None = None) -> Any:
    """Round-robin over the arms, or over `order` (arm names like vision or vision+text)."""
    from distillctl.policies import FixedOrderPolicy

    return FixedOrderPolicy(arms, seed, order=order)


@hookimpl
def register_policies(register: Register) -> None:
    register("optima", optima)
    register("uniform", uniform, aliases=("random",))
    register("fixed-order", fixed_order, aliases=("round-robin",))
