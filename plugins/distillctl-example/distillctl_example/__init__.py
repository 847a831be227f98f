"""A distillctl plugin in one module: the ``discounted-ucb`` selection policy.

distillctl finds this module through the entry point in ``pyproject.toml``::

    [project.entry-points.distillctl]
    example = "distillctl_example"

and calls its ``@hookimpl`` functions (names from :mod:`distillctl.hookspecs`) once at start-up.
The factory's keyword parameters (``discount``, ``c``) are the policy's options: presets and
``--set policy.discount=0.9`` are checked against them. A policy is pure Python (no torch), so
``distillctl simulate`` can run it against synthetic bandits in milliseconds.

Try it::

    distillctl simulate --policies optima,discounted-ucb
    distillctl distill --preset smoke --policy discounted-ucb --set policy.discount=0.9
"""

from __future__ import annotations

import math
import random
from typing import Any

from distillctl import hookimpl


class DiscountedUCBPolicy:
    """Discounted UCB (Garivier & Moulines 2011): recent rewards weigh more; the bonus shrinks with
    the discounted pull count, so an arm that stopped paying is tried again after a while.

    ``discount`` in (0, 1]: weight kept per episode (1 = plain UCB1). ``c``: exploration scale, in
    units of the reward range seen so far (rewards are relative loss decrements, not in [0, 1]).
    """

    def __init__(self, arms: list[tuple[str, ...]], seed: int, discount: float = 0.95, c: float = 0.5) -> None:
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"policy.discount must be in (0, 1], got {discount}")
        if c < 0:
            raise ValueError(f"policy.c must be >= 0, got {c}")
        self.arms = list(arms)
        self.discount, self.c = float(discount), float(c)
        self._rng = random.Random(seed)  # breaks ties, so equal arms are not always played in index order
        self._n = [0.0] * len(self.arms)  # discounted pull counts
        self._s = [0.0] * len(self.arms)  # discounted reward sums
        self._lo, self._hi = math.inf, -math.inf  # reward range seen (scales the bonus)

    def select(self, episode: int) -> int:
        untried = [i for i, n in enumerate(self._n) if n == 0.0]
        if untried:  # every arm once first, in a seeded order
            return self._rng.choice(untried)
        total = sum(self._n)
        scale = (self._hi - self._lo) if self._hi > self._lo else 1.0
        scores = [s / n + self.c * scale * math.sqrt(2 * math.log(max(total, 1.0 + 1e-9)) / n) for s, n in zip(self._s, self._n, strict=True)]
        best = max(scores)
        return self._rng.choice([i for i, v in enumerate(scores) if v == best])

    def update(self, arm: int, reward: float) -> None:
        self._n = [n * self.discount for n in self._n]  # every arm's past fades each episode
        self._s = [s * self.discount for s in self._s]
        self._n[arm] += 1.0
        self._s[arm] += float(reward)
        self._lo, self._hi = min(self._lo, float(reward)), max(self._hi, float(reward))

    def posterior(self) -> list[dict[str, float]]:
        return [{"mean": (s / n) if n else 0.0, "n": n} for s, n in zip(self._s, self._n, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {"n": list(self._n), "s": list(self._s), "lo": self._lo if math.isfinite(self._lo) else None,
                "hi": self._hi if math.isfinite(self._hi) else None, "rng": _rng_state(self._rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._n = [float(x) for x in state["n"]]
        self._s = [float(x) for x in state["s"]]
        self._lo = math.inf if state["lo"] is None else float(state["lo"])
        self._hi = -math.inf if state["hi"] is None else float(state["hi"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


def _rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]  # JSON-serialisable (checkpoints store policy state as JSON)


def discounted_ucb(*, arms: list[tuple[str, ...]], seed: int, discount: float = 0.95, c: float = 0.5) -> DiscountedUCBPolicy:
    """Discounted UCB: recent rewards weigh more (`discount` per episode, default 0.95; `c` exploration)."""
    return DiscountedUCBPolicy(arms, seed, discount=discount, c=c)


@hookimpl
def register_policies(register: Any) -> None:
    register("discounted-ucb", discounted_ucb, aliases=("d-ucb",))  # rename 4/4: your component's name
