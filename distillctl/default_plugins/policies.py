"""Built-in policies (registered through the same hook as any third-party plugin).

The policy classes are pure Python (no torch, no numpy), so they are registered directly: their
``__init__(arms, seed, **options)`` signatures are what config validation reads, so presets and
``--set policy.<key>=...`` are checked against them.
"""

from __future__ import annotations

from distillctl.hookspecs import Register, hookimpl
from distillctl.policies import FixedOrderPolicy, OptimaPolicy, UniformPolicy


@hookimpl
def register_policies(register: Register) -> None:
    register("optima", OptimaPolicy,
             summary="OPTIMA: sliding-window Thompson sampling over recent rewards (non-stationary bandit).")
    register("uniform", UniformPolicy, aliases=("random",), summary="A uniformly random arm every episode (baseline).")
    register("fixed-order", FixedOrderPolicy, aliases=("round-robin",),
             summary="Round-robin over the arms, or over `order` (arm names like vision or vision+text).")
