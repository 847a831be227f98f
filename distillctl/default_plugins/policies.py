"""Built-in policies (registered through the same hook as any third-party plugin).

The policy classes are pure Python (no torch, no numpy), so they are registered directly: their
``__init__(arms, seed, **options)`` signatures are what config validation reads, so presets and
``--set policy.<key>=...`` are checked against them.
"""

from __future__ import annotations

from distillctl.hookspecs import Register, hookimpl
from distillctl.policies import (
    DiscountedTSPolicy,
    FixedOrderPolicy,
    OptimaPolicy,
    SlidingWindowTSPolicy,
    SlidingWindowUCBPolicy,
    ThompsonPolicy,
    UniformPolicy,
)


@hookimpl
def register_policies(register: Register) -> None:
    register("optima", OptimaPolicy,
             summary="OPTIMA: Thompson sampling on recent (discounted) rewards, conjugate Gaussian posterior.")
    register("uniform", UniformPolicy, aliases=("random",), summary="A uniformly random arm every episode (baseline).")
    register("fixed-order", FixedOrderPolicy, aliases=("round-robin",),
             summary="Round-robin over the arms, or over `order` (arm names like vision or vision+text).")
    # textbook references, so that `simulate` and `compare` can measure optima against them
    register("ts", ThompsonPolicy, aliases=("thompson",),
             summary="Stationary Gaussian Thompson sampling over all rewards (reference; never forgets).")
    register("sw-ts", SlidingWindowTSPolicy,
             summary="Sliding-window Gaussian Thompson sampling, `window` episodes (default 50; reference).")
    register("discounted-ts", DiscountedTSPolicy, aliases=("d-ts",),
             summary="Discounted Gaussian Thompson sampling, `discount` per episode (default 0.95; reference).")
    register("sw-ucb", SlidingWindowUCBPolicy,
             summary="Sliding-window UCB, `window` 50 and `xi` 0.6, bonus scaled to the observed reward range (reference).")
