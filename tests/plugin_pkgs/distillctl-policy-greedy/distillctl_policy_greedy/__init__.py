"""A greedy selection policy for distillctl: always the arm with the best mean reward so far.

Installed, it registers the policy ``greedy`` through the ``distillctl`` entry-point group::

    [project.entry-points.distillctl]
    greedy = "distillctl_policy_greedy"
"""

from __future__ import annotations

import random
from typing import Any

from distillctl import hookimpl


class GreedyPolicy:
    """Play every arm once, then the arm with the best mean reward (ties: lowest index)."""

    def __init__(self, arms: list[tuple[str, ...]], seed: int, epsilon: float = 0.0) -> None:
        self.arms = list(arms)
        self.epsilon = epsilon
        self._rng = random.Random(seed)
        self._sums = [0.0] * len(self.arms)
        self._counts = [0] * len(self.arms)

    def select(self, episode: int) -> int:
        for i, n in enumerate(self._counts):
            if n == 0:
                return i
        if self.epsilon > 0 and self._rng.random() < self.epsilon:
            return self._rng.randrange(len(self.arms))
        means = [s / n for s, n in zip(self._sums, self._counts, strict=True)]
        return max(range(len(self.arms)), key=lambda i: (means[i], -i))

    def update(self, arm: int, reward: float) -> None:
        self._sums[arm] += reward
        self._counts[arm] += 1

    def posterior(self) -> list[dict[str, float]]:
        return [{"mean": s / n if n else 0.0, "n": float(n)} for s, n in zip(self._sums, self._counts, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {"sums": list(self._sums), "counts": list(self._counts), "rng": repr(self._rng.getstate())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import ast

        self._sums = [float(x) for x in state["sums"]]
        self._counts = [int(x) for x in state["counts"]]
        self._rng.setstate(ast.literal_eval(state["rng"]))


def make_greedy(*, arms: list[tuple[str, ...]], seed: int, epsilon: float = 0.0) -> GreedyPolicy:
    """Greedy: always the arm with the best mean reward so far (epsilon: random-arm rate)."""
    return GreedyPolicy(arms, seed, epsilon)


@hookimpl
def register_policies(register: Any) -> None:
    register("greedy", make_greedy)
