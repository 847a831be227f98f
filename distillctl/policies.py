"""Selection policies: which arm (set of modules) each distillation episode trains.

Pure Python on purpose: no torch, no numpy. Every random draw comes from one seeded
``random.Random`` that is part of :meth:`BasePolicy.state_dict`, so a policy can be checkpointed as
JSON and resumed bit-exactly, and ``distillctl simulate`` can run policies against synthetic bandits
without importing torch.

Vocabulary (DESIGN.md §1, §4): an **arm** is a non-empty tuple of module names; an **episode** is
one select -> train -> reward -> update round; the **reward** is the relative decrement of the
probe loss the episode caused (typically 0.001-0.5, shrinking as the student converges).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from distillctl.errors import ConfigError, DistillctlError

Arm = tuple[str, ...]

ARM_MODES: tuple[str, ...] = ("single", "combinations", "all")


def arm_name(arm: Sequence[str]) -> str:
    """``("vision", "text")`` -> ``"vision+text"`` (the name used in configs, logs and reports)."""
    return "+".join(arm)


def build_arms(modules: list[str], mode: str) -> list[Arm]:
    """The arm set over ``modules`` (in the splitter's module order).

    ``single``: one arm per module. ``combinations``: every non-empty subset, by size then module
    order. ``all``: one arm holding every module (= standard layerwise distillation).
    """
    if mode not in ARM_MODES:
        raise ConfigError([f"policy.arms: unknown arm set {mode!r} (valid: {', '.join(ARM_MODES)})"])
    if not modules:
        raise DistillctlError("cannot build arms: the model has no modules.", hint="Check the splitter.")
    if len(set(modules)) != len(modules):
        raise DistillctlError(f"cannot build arms: duplicate module names in {list(modules)}.")
    names = [str(m) for m in modules]
    if mode == "single":
        return [(m,) for m in names]
    if mode == "all":
        return [tuple(names)]
    return [tuple(c) for size in range(1, len(names) + 1) for c in combinations(names, size)]


# --------------------------------------------------------------------------- helpers
def _rng_state_to_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def _rng_state_from_json(state: Sequence[Any]) -> tuple[Any, ...]:
    version, internal, gauss_next = state
    return (int(version), tuple(int(x) for x in internal), gauss_next)


def _check_number(key: str, value: Any, *, positive: bool = False, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError([f"policy.{key}: expected a finite number, got {value!r}"])
    if positive and value <= 0:
        raise ConfigError([f"policy.{key}: must be greater than 0, got {value!r}"])
    return float(value)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 with fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


# --------------------------------------------------------------------------- base
class BasePolicy:
    """Common state of every built-in policy: arms, reward history and one seeded RNG.

    ``history`` holds ``(episode, arm_index, reward)`` for every :meth:`update`, in order. The
    episode recorded is the one passed to the last :meth:`select` (or the next number after the
    last recorded episode when ``update`` is called without ``select``). Episodes count from 0.
    """

    name = "base"

    def __init__(self, arms: Sequence[Sequence[str]], seed: int = 0) -> None:
        arm_list = [tuple(str(m) for m in a) for a in arms]
        if not arm_list:
            raise DistillctlError("a policy needs at least one arm.", hint="Check policy.arms and the splitter.")
        if any(not a for a in arm_list):
            raise DistillctlError("an arm must hold at least one module; got an empty arm.")
        if len({arm_name(a) for a in arm_list}) != len(arm_list):
            raise DistillctlError(f"duplicate arms: {[arm_name(a) for a in arm_list]}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError([f"train.seed: expected an integer, got {seed!r}"])
        self.arms: list[Arm] = arm_list
        self.seed = seed
        self.rng = random.Random(seed)
        self.history: list[tuple[int, int, float]] = []
        self._pending_episode: int | None = None

    # -- the Policy protocol -------------------------------------------------------------
    def select(self, episode: int) -> int:
        """Index into ``arms`` for this episode."""
        self._pending_episode = int(episode)
        return self._choose(int(episode))

    def _choose(self, episode: int) -> int:  # pragma: no cover - subclasses implement it
        raise NotImplementedError

    def update(self, arm: int, reward: float) -> None:
        """Record the reward that arm ``arm`` earned in the episode just selected."""
        if isinstance(arm, bool) or not isinstance(arm, int) or not 0 <= arm < len(self.arms):
            raise DistillctlError(f"policy update: arm index {arm!r} out of range 0..{len(self.arms) - 1}.")
        reward = float(reward)
        if not math.isfinite(reward):
            raise DistillctlError(f"policy update: reward for arm {arm_name(self.arms[arm])!r} is not finite ({reward}).")
        if self._pending_episode is not None:
            episode = self._pending_episode
        else:
            episode = self.history[-1][0] + 1 if self.history else 0
        self._pending_episode = None
        self.history.append((episode, arm, reward))

    def pulls(self) -> list[int]:
        """How many rewards each arm has earned so far."""
        counts = [0] * len(self.arms)
        for _, a, _ in self.history:
            counts[a] += 1
        return counts

    def posterior(self) -> list[dict[str, float]]:
        """Per arm: mean and sample std of every reward so far, and the count ``n``."""
        per_arm: list[list[float]] = [[] for _ in self.arms]
        for _, a, r in self.history:
            per_arm[a].append(r)
        out = []
        for rewards in per_arm:
            if rewards:
                mean, std = _mean_std(rewards)
                out.append({"mean": mean, "std": std, "n": float(len(rewards))})
            else:
                out.append({"mean": 0.0, "std": 0.0, "n": 0.0})
        return out

    def options(self) -> dict[str, Any]:
        """The policy's knobs (recorded in the state so a resume can tell a changed config)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly. JSON-serialisable."""
        return {
            "policy": self.name,
            "arms": [list(a) for a in self.arms],
            "seed": self.seed,
            "options": self.options(),
            "history": [[e, a, r] for e, a, r in self.history],
            "pending_episode": self._pending_episode,
            "rng": _rng_state_to_json(self.rng.getstate()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the arms must match this policy's arms."""
        try:
            saved_policy = state["policy"]
            saved_arms = [tuple(a) for a in state["arms"]]
            history = [(int(e), int(a), float(r)) for e, a, r in state["history"]]
            pending = state.get("pending_episode")
            rng_state = _rng_state_from_json(state["rng"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DistillctlError(f"policy state is malformed ({type(exc).__name__}: {exc}).") from None
        if saved_policy != self.name:
            raise DistillctlError(
                f"policy state was saved by policy {saved_policy!r}, but this run uses {self.name!r}.",
                hint="Resume with the same policy.name.",
            )
        if saved_arms != self.arms:
            raise DistillctlError(
                f"policy state was saved for arms {[arm_name(a) for a in saved_arms]}, "
                f"but this run has {[arm_name(a) for a in self.arms]}.",
                hint="Resume with the same policy.arms and splitter.",
            )
        if any(not 0 <= a < len(self.arms) for _, a, _ in history):
            raise DistillctlError("policy state is malformed (arm index out of range in history).")
        self.history = history
        self._pending_episode = None if pending is None else int(pending)
        self.rng.setstate(rng_state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(arms={[arm_name(a) for a in self.arms]}, seed={self.seed})"


# --------------------------------------------------------------------------- baselines
class UniformPolicy(BasePolicy):
    """A uniformly random arm every episode (the paper's random baseline)."""

    name = "uniform"

    def _choose(self, episode: int) -> int:
        return self.rng.randrange(len(self.arms))


class FixedOrderPolicy(BasePolicy):
    """Round-robin over ``order`` (arm names like ``"vision"`` or ``"vision+text"``).

    Episode ``e`` plays ``order[e % len(order)]``; the default order is the arm order. With the
    ``all`` arm set this is standard layerwise distillation (the same single arm every episode).
    """

    name = "fixed-order"

    def __init__(self, arms: Sequence[Sequence[str]], seed: int = 0, order: Sequence[str] | None = None) -> None:
        super().__init__(arms, seed)
        names = [arm_name(a) for a in self.arms]
        if order is None:
            self.order = list(range(len(self.arms)))
            return
        if isinstance(order, str) or not isinstance(order, (list, tuple)) or not order:
            raise ConfigError([f"policy.order: expected a non-empty list of arm names, got {order!r}"])
        bad = [o for o in order if o not in names]
        if bad:
            raise ConfigError(
                [f"policy.order: unknown arm {', '.join(repr(str(b)) for b in bad)} (valid arms: {', '.join(names)})"]
            )
        self.order = [names.index(o) for o in order]

    def _choose(self, episode: int) -> int:
        return self.order[episode % len(self.order)]

    def options(self) -> dict[str, Any]:
        return {"order": [arm_name(self.arms[i]) for i in self.order]}


# --------------------------------------------------------------------------- OPTIMA
class OptimaPolicy(BasePolicy):
    """OPTIMA: sliding-window Gaussian Thompson sampling for a non-stationary bandit.

    Our reconstruction of Liang et al. (NeurIPS 2023), DESIGN.md §4:

    1. **Warm-up** (``warmup=True``): one round-robin pass, so every arm has one reward.
    2. **Recent history**: only the rewards of the last ``window`` episodes count (one global
       window over the reward history, not per arm), so an arm's estimate forgets how useful it
       *was* — the reward of training a module changes as the student learns.
    3. **Posterior per arm** with ``n_a > 0`` rewards in the window: Gaussian with mean = the
       window mean of its rewards and variance = ``sigma**2 / (n_a + 1)``. ``sigma`` is the
       configured value, or the standard deviation of all rewards in the window, floored at
       ``min_sigma_ratio`` times their mean magnitude (identical rewards must not freeze the
       policy); with fewer than two rewards in the window it falls back to ``prior_std``.
    4. **Optimistic prior** for an arm with no reward in the window: ``N(prior_mean, prior_std**2)``.
       By default ``prior_mean`` = best window mean + ``prior_std``, so an arm that has not been
       played for ``window`` episodes is probably re-explored — that is how a neglected arm that
       became useful is found again, within about one window.
    5. Sample ``theta_a`` for every arm from the policy's seeded RNG and play the argmax.

    Defaults (rewards are relative decrements, order 0.001-0.5, so nothing here is absolute
    unless configured):

    - ``window=None`` -> ``max(3 * len(arms), 10)``. Each arm that drops out of the window gets
      re-explored about once per window, so the forced exploration is ~``(len(arms)-1)/window``
      (<= ~20-30%), and a change in the best arm is noticed within about one window. Short runs
      (the default 20 episodes) need a short window; more arms need a longer one. Measured with
      ``distillctl.simulate`` (3 arms, means 0.05/0.02/0.01, noise 0.01, 40 seeds): window 10
      plays the best arm ~80% of the time and, when a neglected arm becomes best, plays it in 4 of
      5 episodes within at most 10 episodes of the change (median 4); window 20: ~90%, but up to
      16-21 episodes to notice.
    - ``sigma=None`` -> estimated from the window (see 3).
    - ``prior_std=None`` -> the current ``sigma`` (the reward noise scale); 0.05 before there are
      two rewards (a typical early relative decrement; only used without warm-up).
    - ``prior_mean=None`` -> best window mean + ``prior_std`` (optimistic); 0.0 before any reward.
    """

    name = "optima"

    DEFAULT_SCALE = 0.05  # reward scale before anything is observed (relative probe-loss decrement)

    def __init__(
        self,
        arms: Sequence[Sequence[str]],
        seed: int = 0,
        window: int | None = None,
        sigma: float | None = None,
        prior_mean: float | None = None,
        prior_std: float | None = None,
        min_sigma_ratio: float = 0.1,
        warmup: bool = True,
    ) -> None:
        super().__init__(arms, seed)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ConfigError([f"policy.window: expected a positive integer, got {window!r}"])
        if not isinstance(warmup, bool):
            raise ConfigError([f"policy.warmup: expected true or false, got {warmup!r}"])
        self.window = window if window is not None else max(3 * len(self.arms), 10)
        self.sigma = _check_number("sigma", sigma, positive=True)
        self.prior_mean = _check_number("prior_mean", prior_mean)
        self.prior_std = _check_number("prior_std", prior_std, positive=True)
        ratio = _check_number("min_sigma_ratio", min_sigma_ratio, allow_none=False)
        if ratio is None or ratio < 0:
            raise ConfigError([f"policy.min_sigma_ratio: must be at least 0, got {min_sigma_ratio!r}"])
        self.min_sigma_ratio = ratio
        self.warmup = warmup

    def options(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "sigma": self.sigma,
            "prior_mean": self.prior_mean,
            "prior_std": self.prior_std,
            "min_sigma_ratio": self.min_sigma_ratio,
            "warmup": self.warmup,
        }

    def _window_rewards(self) -> list[list[float]]:
        per_arm: list[list[float]] = [[] for _ in self.arms]
        for _, a, r in self.history[-self.window :]:
            per_arm[a].append(r)
        return per_arm

    def _gaussians(self) -> list[tuple[float, float, int]]:
        """(mean, std, n in window) of each arm's posterior."""
        per_arm = self._window_rewards()
        recent = [r for rewards in per_arm for r in rewards]
        if self.sigma is not None:
            sigma = self.sigma
        elif len(recent) >= 2:
            mean, std = _mean_std(recent)
            floor = max(self.min_sigma_ratio * sum(abs(r) for r in recent) / len(recent), 1e-12)
            sigma = max(std, floor)
        else:
            sigma = self.prior_std if self.prior_std is not None else self.DEFAULT_SCALE
        prior_std = self.prior_std if self.prior_std is not None else sigma
        means = [sum(r) / len(r) for r in per_arm if r]
        if self.prior_mean is not None:
            prior_mean = self.prior_mean
        else:
            prior_mean = max(means) + prior_std if means else 0.0
        out = []
        for rewards in per_arm:
            n = len(rewards)
            if n:
                out.append((sum(rewards) / n, sigma / math.sqrt(n + 1), n))
            else:
                out.append((prior_mean, prior_std, 0))
        return out

    def _choose(self, episode: int) -> int:
        if self.warmup:
            played = {a for _, a, _ in self.history}
            for i in range(len(self.arms)):
                if i not in played:
                    return i
        best, best_theta = 0, -math.inf
        for i, (mean, std, _) in enumerate(self._gaussians()):
            theta = self.rng.gauss(mean, std)  # one draw per arm, in arm order: reproducible
            if theta > best_theta:
                best, best_theta = i, theta
        return best

    def posterior(self) -> list[dict[str, float]]:
        """Per arm: posterior ``mean``, ``std`` and ``n`` (rewards in the window; 0 = prior)."""
        return [{"mean": m, "std": s, "n": float(n)} for m, s, n in self._gaussians()]


POLICIES: dict[str, type[BasePolicy]] = {
    OptimaPolicy.name: OptimaPolicy,
    UniformPolicy.name: UniformPolicy,
    FixedOrderPolicy.name: FixedOrderPolicy,
}
