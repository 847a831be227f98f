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
import re
import sys
from collections import deque
from collections.abc import Sequence
from itertools import combinations
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from distillctl.errors import ConfigError, DistillctlError, UsageError

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
    uses_rewards = True  # False: choices never depend on rewards (the engine then skips burn-in)

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
        self._observe(arm, reward)

    def _observe(self, arm: int, reward: float) -> None:
        """Fold one reward into derived statistics (none here). :meth:`load_state_dict` replays the
        history through it in order, so derived floats are bit-identical after a resume."""

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
        self._reset_stats()
        self.history = []
        for episode, arm, reward in history:
            self.history.append((episode, arm, reward))
            self._observe(arm, reward)
        self._pending_episode = None if pending is None else int(pending)
        self.rng.setstate(rng_state)

    def _reset_stats(self) -> None:
        """Forget derived statistics (before :meth:`load_state_dict` replays the history)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(arms={[arm_name(a) for a in self.arms]}, seed={self.seed})"


# --------------------------------------------------------------------------- baselines
class UniformPolicy(BasePolicy):
    """A uniformly random arm every episode (the paper's random baseline)."""

    name = "uniform"
    uses_rewards = False  # its choices ignore rewards: no burn-in needed (engine.burn_in_arm)

    def _choose(self, episode: int) -> int:
        return self.rng.randrange(len(self.arms))


class FixedOrderPolicy(BasePolicy):
    """Round-robin over ``order`` (arm names like ``"vision"`` or ``"vision+text"``).

    Episode ``e`` plays ``order[e % len(order)]``; the default order is the arm order. With the
    ``all`` arm set this is standard layerwise distillation (the same single arm every episode).
    """

    name = "fixed-order"
    uses_rewards = False  # its choices ignore rewards: no burn-in needed (engine.burn_in_arm)

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


# --------------------------------------------------------------------------- Gaussian bandit statistics
class _ArmStats:
    """Per-arm weighted reward sums under one forgetting rule.

    For arm ``a``: ``n = Σw``, ``n2 = Σw²``, ``s = Σw·r``, ``q = Σw·r²`` over its rewards, with
    ``w = 1`` for every reward (``window=None, discount=None``: all history), for the rewards of the
    last ``window`` episodes (a global sliding window), or ``w = discount**age`` (discounting).
    Updated in O(arms) per reward; replaying the same rewards in the same order gives bit-identical
    sums, which is how a resumed policy matches an uninterrupted one.
    """

    __slots__ = ("k", "window", "discount", "n", "n2", "s", "q", "recent")

    def __init__(self, k: int, window: int | None = None, discount: float | None = None) -> None:
        self.k, self.window, self.discount = k, window, discount
        self.reset()

    def reset(self) -> None:
        self.n = [0.0] * self.k
        self.n2 = [0.0] * self.k
        self.s = [0.0] * self.k
        self.q = [0.0] * self.k
        self.recent: deque[tuple[int, float]] = deque()

    def add(self, arm: int, reward: float) -> None:
        n, n2, s, q = self.n, self.n2, self.s, self.q
        if self.discount is not None:
            g = self.discount
            g2 = g * g
            for i in range(self.k):
                n[i] *= g
                n2[i] *= g2
                s[i] *= g
                q[i] *= g
        n[arm] += 1.0
        n2[arm] += 1.0
        s[arm] += reward
        q[arm] += reward * reward
        if self.window is not None:
            self.recent.append((arm, reward))
            if len(self.recent) > self.window:
                old_arm, old = self.recent.popleft()
                n[old_arm] -= 1.0
                n2[old_arm] -= 1.0
                if n[old_arm] <= 0.0:  # exactly empty again: no rounding residue survives
                    n[old_arm] = n2[old_arm] = s[old_arm] = q[old_arm] = 0.0
                else:
                    s[old_arm] -= old
                    q[old_arm] -= old * old

    def summary(self) -> tuple[float, float, float, float, float]:
        """``(N, pooled mean, pooled variance, within-arm SSE, within-arm dof)`` of the weighted data.

        The pooled variance spreads every reward about the pooled mean (between-arm + noise); the
        within-arm SSE / dof is the noise alone (residuals about each arm's own mean), with
        reliability-weight degrees of freedom ``Σ_a (n_a - n2_a / n_a)`` (= ``Σ (n_a - 1)`` unweighted).
        """
        big_n = sum(self.n)
        if big_n <= 0.0:
            return 0.0, 0.0, 0.0, 0.0, 0.0
        big_s, big_q, big_n2 = sum(self.s), sum(self.q), sum(self.n2)
        mean = big_s / big_n
        pooled_dof = big_n - big_n2 / big_n
        pooled = max(big_q - big_s * mean, 0.0) / pooled_dof if pooled_dof > 1e-9 else 0.0
        sse = dof = 0.0
        for n, n2, s, q in zip(self.n, self.n2, self.s, self.q, strict=True):
            if n > 0.0:
                sse += max(q - s * s / n, 0.0)
                dof += n - n2 / n
        return big_n, mean, pooled, sse, dof


def _plugin_noise_var(stats: _ArmStats) -> float:
    """The textbook plug-in estimate of the reward noise variance: pooled within-arm residual
    variance; before any arm has two rewards, the spread of all rewards; before that, the reward
    scale itself. Floored at (0.1% of the mean reward)² so identical rewards cannot freeze a sampler.
    """
    big_n, mean, pooled, sse, dof = stats.summary()
    if dof >= 1.0:
        var = sse / dof
    elif pooled > 0.0:
        var = pooled
    else:
        var = (abs(mean) or OptimaPolicy.DEFAULT_SCALE) ** 2
    return max(var, (1e-3 * abs(mean)) ** 2, 1e-30)


class _BanditPolicy(BasePolicy):
    """Shared machinery of the Gaussian bandit policies: per-arm statistics (:class:`_ArmStats`),
    a first pass over the arms in an order drawn from the policy's seeded RNG (``first_pass``), and
    :meth:`posterior`. Subclasses implement :meth:`_gaussians` and, if not sampling, ``_choose``.
    """

    def __init__(self, arms: Sequence[Sequence[str]], seed: int = 0, *,
                 window: int | None = None, discount: float | None = None) -> None:
        super().__init__(arms, seed)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ConfigError([f"policy.window: expected a positive integer, got {window!r}"])
        if discount is not None:
            discount = _check_number("discount", discount)
            if discount is None or not 0.0 < discount <= 1.0:
                raise ConfigError([f"policy.discount: expected a number in (0, 1], got {discount!r}"])
        self.first_pass = list(range(len(self.arms)))
        self.rng.shuffle(self.first_pass)  # drawn from the seeded RNG: no arm order is favoured
        self.stats = _ArmStats(len(self.arms), window, discount)

    def _reset_stats(self) -> None:
        self.stats.reset()

    def _observe(self, arm: int, reward: float) -> None:
        self.stats.add(arm, reward)

    def _unplayed(self) -> int | None:
        """The first arm, in ``first_pass`` order, with no reward in the statistics (None if none)."""
        n = self.stats.n
        for i in self.first_pass:
            if n[i] <= 0.0:
                return i
        return None

    def _gaussians(self) -> list[tuple[float, float, float]]:  # pragma: no cover - subclasses
        """(mean, std, weighted count) of each arm's posterior."""
        raise NotImplementedError

    def _sample(self) -> int:
        best, best_theta = 0, -math.inf
        for i, (mean, std, _) in enumerate(self._gaussians()):
            theta = self.rng.gauss(mean, std)  # one draw per arm, in arm order: reproducible
            if theta > best_theta:
                best, best_theta = i, theta
        return best

    def _choose(self, episode: int) -> int:
        first = self._unplayed()
        return first if first is not None else self._sample()

    def posterior(self) -> list[dict[str, float]]:
        """Per arm: posterior ``mean``, ``std`` and ``n`` (the weighted count of its recent rewards).

        Finite numbers only (it goes into ``report.json``): an arm with ``n == 0`` that a reference
        policy will play next shows ``mean`` and ``std`` 0.0."""
        if not self.history:
            return [{"mean": 0.0, "std": 0.0, "n": 0.0} for _ in self.arms]
        return [{"mean": m, "std": s, "n": float(n)} for m, s, n in self._gaussians()]


# --------------------------------------------------------------------------- textbook references
class ThompsonPolicy(_BanditPolicy):
    """Stationary Gaussian Thompson sampling (Agrawal & Goyal 2013), a reference for ``optima``.

    Every arm once (order drawn from the seeded RNG), then sample ``theta_a ~ N(mean_a,
    sigma**2 / n_a)`` over *all* rewards so far and play the argmax. ``sigma`` is the plug-in
    estimate: the pooled within-arm residual standard deviation (scale-free: rewards may be 0.001
    or 0.5). It never forgets, so it is the right tool only while the best arm stays the best.
    """

    name = "ts"

    def __init__(self, arms: Sequence[Sequence[str]], seed: int = 0) -> None:
        super().__init__(arms, seed)

    def _gaussians(self) -> list[tuple[float, float, float]]:
        var = _plugin_noise_var(self.stats)
        return [(s / n, math.sqrt(var / n), n) if n > 0 else (0.0, 0.0, 0.0)
                for n, s in zip(self.stats.n, self.stats.s, strict=True)]


class SlidingWindowTSPolicy(ThompsonPolicy):
    """Sliding-window Gaussian Thompson sampling (Trovò et al. 2020), a reference for ``optima``.

    As ``ts``, but only the rewards of the last ``window`` episodes count (one global window); an
    arm with no reward in the window is played next (in ``first_pass`` order). ``window=50`` is the
    usual textbook setting.
    """

    name = "sw-ts"

    def __init__(self, arms: Sequence[Sequence[str]], seed: int = 0, window: int = 50) -> None:
        _BanditPolicy.__init__(self, arms, seed, window=window)
        self.window = window

    def options(self) -> dict[str, Any]:
        return {"window": self.window}


class DiscountedTSPolicy(ThompsonPolicy):
    """Discounted Gaussian Thompson sampling (Raj & Kalyani 2017), a reference for ``optima``.

    Every reward's weight is multiplied by ``discount`` each episode; an arm's posterior is
    ``N(discounted mean, sigma**2 / discounted count)``, so an arm left alone grows uncertain and
    is re-explored. ``discount=0.95`` (memory of ~20 episodes) is the usual textbook setting.
    """

    name = "discounted-ts"

    def __init__(self, arms: Sequence[Sequence[str]], seed: int = 0, discount: float = 0.95) -> None:
        _BanditPolicy.__init__(self, arms, seed, discount=discount)
        self.discount = discount

    def options(self) -> dict[str, Any]:
        return {"discount": self.discount}


class SlidingWindowUCBPolicy(_BanditPolicy):
    """Sliding-window UCB (Garivier & Moulines 2011), a reference for ``optima``.

    Plays the arm maximising ``mean_a + B * sqrt(xi * log(min(t, window)) / n_a)`` over the rewards
    of the last ``window`` episodes; an arm with no reward in the window is played first (in
    ``first_pass`` order). ``B``, the reward range bound, is the observed range (max - min) of the
    rewards in the window, so the index is scale-free. Defaults ``window=50``, ``xi=0.6`` (the
    paper's simulation settings). Ties go to the lower arm index.
    """

    name = "sw-ucb"

    def __init__(self, arms: Sequence[Sequence[str]], seed: int = 0, window: int = 50, xi: float = 0.6) -> None:
        super().__init__(arms, seed, window=window)
        xi_value = _check_number("xi", xi, positive=True, allow_none=False)
        assert xi_value is not None
        self.window, self.xi = window, xi_value

    def options(self) -> dict[str, Any]:
        return {"window": self.window, "xi": self.xi}

    def _gaussians(self) -> list[tuple[float, float, float]]:
        """(mean, exploration bonus, n): the bonus stands in for ``std`` in :meth:`posterior`."""
        recent = [r for _, r in self.stats.recent]
        spread = (max(recent) - min(recent)) if recent else 0.0
        bound = spread or (max((abs(r) for r in recent), default=0.0) or OptimaPolicy.DEFAULT_SCALE)
        log_t = math.log(max(min(len(self.history), self.window), 1))
        return [(s / n, bound * math.sqrt(self.xi * log_t / n), n) if n > 0 else (0.0, 0.0, 0.0)
                for n, s in zip(self.stats.n, self.stats.s, strict=True)]

    def _choose(self, episode: int) -> int:
        first = self._unplayed()
        if first is not None:
            return first
        best, best_index = 0, -math.inf
        for i, (mean, bonus, _) in enumerate(self._gaussians()):
            if mean + bonus > best_index:
                best, best_index = i, mean + bonus
        return best


# --------------------------------------------------------------------------- OPTIMA
class OptimaPolicy(_BanditPolicy):
    """OPTIMA: Thompson sampling on recent rewards, with a conjugate Gaussian posterior.

    Our reconstruction of Liang et al. (NeurIPS 2023), DESIGN.md §4:

    1. **Warm-up** (``warmup=True``): every arm once, in an order drawn from the policy's seeded
       RNG (``first_pass``), so no module is favoured by its position in the arm list.
    2. **Recent history**: each reward's weight decays by ``discount`` per episode (the default),
       or only the last ``window`` episodes count when ``window`` is set (one global window). An arm's
       estimate forgets how useful it *was*: the reward of training a module changes as the student
       learns.
    3. **Noise** ``sigma``: the pooled *within-arm* residual standard deviation of the recent
       rewards (each reward about its own arm's mean, so the gaps between arms are not mistaken for
       noise), shrunk towards the pooled spread of all recent rewards with ``prior_dof`` pseudo
       degrees of freedom (stable while arms have one or two rewards), floored at
       ``min_sigma_ratio`` times the mean reward (identical rewards must not freeze the policy).
    4. **Posterior per arm** (conjugate Normal-Normal, mean and variance consistent): prior
       ``N(prior_mean, prior_std**2)`` with, by default, ``prior_mean`` = the pooled mean of the recent
       rewards and ``prior_std`` = their pooled spread (empirical Bayes); with weighted count ``n_a``
       and weighted sum ``s_a``, precision ``1/prior_std**2 + n_a/sigma**2``, mean
       ``(prior_mean/prior_std**2 + s_a/sigma**2) / precision``. An arm with little recent evidence
       falls back towards the prior: it is re-explored exactly as much as that uncertainty warrants,
       not on a schedule.
    5. Sample ``theta_a ~ N(mean_a, (exploration * std_a)**2)`` for every arm from the seeded RNG and
       play the argmax. ``exploration < 1`` sharpens the posterior the samples are drawn from
       ("posterior reshaping", Chapelle & Li 2011): plain Thompson sampling over-explores when the
       horizon is short, the arms many or the noise high, because the best of several wide draws is
       almost always a poorly known arm.

    Defaults, chosen by measurement with ``distillctl simulate --suite`` (24 scenarios: rewards
    decaying at different rates so the best arm changes, abrupt switches, slow drift, every arm
    decaying together; 3 and 7 arms; noise 0.25x, 1x and 3x the typical gap between arm means;
    60 and 500 episodes; 20 paired seeds; regret normalised by uniform play's, lower is better):

    - ``exploration=0.5``: 0.48 / 0.21 at 60 / 500 episodes, against 0.55 / 0.29 with 1.0 (plain
      TS) and 0.46 / 0.19 with 0.3; but 0.3 loses at low noise (0.12 vs 0.11 at 500 episodes) and
      greedy play (~0) collapses at 500 (0.33): the smaller the noise relative to the gaps, the
      more exploration pays, so 0.5 is the robust middle rather than the suite's optimum.
    - ``discount=0.98`` (a memory of ~50 episodes), ``window=None``: 0.98-0.99 and windows of
      80-150 are within 0.01 of each other; 0.95 costs 0.06 at 500 episodes, no forgetting 0.11.
    - ``prior_dof=1``, ``min_sigma_ratio=0.01``: the noise shrinkage matters little once arms have a
      few rewards (0 vs 1 vs 4: within 0.005).
    - ``sigma=None``, ``prior_mean=None``, ``prior_std=None``: estimated, see 3. and 4.

    The references on the same suite: ``sw-ts`` (window 50) 0.52 / 0.28, ``ts`` 0.53 / 0.32,
    ``discounted-ts`` (0.95) 0.54 / 0.34, ``sw-ucb`` 0.65 / 0.58, ``uniform`` and ``fixed-order`` 1.0;
    the previous ``optima`` (window ``max(3k, 10)``, optimistic prior, pooled sigma) 0.56 / 0.49.
    The suite is not the whole truth: it is synthetic, and a real run has 20-200 episodes.
    """

    name = "optima"

    DEFAULT_SCALE = 0.05  # reward scale before anything is observed (relative probe-loss decrement)
    DEFAULT_DISCOUNT = 0.98
    DEFAULT_PRIOR_DOF = 1.0
    DEFAULT_EXPLORATION = 0.5

    def __init__(
        self,
        arms: Sequence[Sequence[str]],
        seed: int = 0,
        window: int | None = None,
        discount: float | None = DEFAULT_DISCOUNT,
        sigma: float | None = None,
        prior_mean: float | None = None,
        prior_std: float | None = None,
        prior_dof: float = DEFAULT_PRIOR_DOF,
        exploration: float = DEFAULT_EXPLORATION,
        min_sigma_ratio: float = 0.01,
        warmup: bool = True,
    ) -> None:
        if not isinstance(warmup, bool):
            raise ConfigError([f"policy.warmup: expected true or false, got {warmup!r}"])
        if window is not None:
            discount = None  # a window replaces discounting (set both only to say so explicitly)
        super().__init__(arms, seed, window=window, discount=discount)
        self.window = window
        self.discount = None if discount is None else float(discount)
        self.sigma = _check_number("sigma", sigma, positive=True)
        self.prior_mean = _check_number("prior_mean", prior_mean)
        self.prior_std = _check_number("prior_std", prior_std, positive=True)
        dof = _check_number("prior_dof", prior_dof, allow_none=False)
        if dof is None or dof < 0:
            raise ConfigError([f"policy.prior_dof: must be at least 0, got {prior_dof!r}"])
        self.prior_dof = dof
        scale = _check_number("exploration", exploration, positive=True, allow_none=False)
        assert scale is not None
        self.exploration = scale
        ratio = _check_number("min_sigma_ratio", min_sigma_ratio, allow_none=False)
        if ratio is None or ratio < 0:
            raise ConfigError([f"policy.min_sigma_ratio: must be at least 0, got {min_sigma_ratio!r}"])
        self.min_sigma_ratio = ratio
        self.warmup = warmup
        self._played = [False] * len(self.arms)

    def options(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "discount": self.discount,
            "sigma": self.sigma,
            "prior_mean": self.prior_mean,
            "prior_std": self.prior_std,
            "prior_dof": self.prior_dof,
            "exploration": self.exploration,
            "min_sigma_ratio": self.min_sigma_ratio,
            "warmup": self.warmup,
        }

    def _reset_stats(self) -> None:
        super()._reset_stats()
        self._played = [False] * len(self.arms)

    def _observe(self, arm: int, reward: float) -> None:
        super()._observe(arm, reward)
        self._played[arm] = True

    def _unplayed(self) -> int | None:
        """Warm-up: the next never-played arm in ``first_pass`` order (None once all were played)."""
        if not self.warmup:
            return None
        for i in self.first_pass:
            if not self._played[i]:
                return i
        return None

    def _noise_and_prior(self) -> tuple[float, float, float]:
        """``(sigma**2, prior_mean, prior_std**2)`` from the recent rewards (or the options)."""
        big_n, mean, pooled, sse, dof = self.stats.summary()
        scale = abs(mean) if big_n > 0 else 0.0
        if pooled <= 0.0:  # one reward, or identical ones: all we know is the reward scale
            pooled = (scale or (self.prior_std or self.DEFAULT_SCALE)) ** 2
        if self.sigma is not None:
            var = self.sigma**2
        else:
            var = (sse + self.prior_dof * pooled) / (dof + self.prior_dof) if dof + self.prior_dof > 0 else pooled
            var = max(var, (self.min_sigma_ratio * scale) ** 2, 1e-30)
        prior_mean = self.prior_mean if self.prior_mean is not None else (mean if big_n > 0 else 0.0)
        prior_var = self.prior_std**2 if self.prior_std is not None else pooled
        return var, prior_mean, prior_var

    def _gaussians(self) -> list[tuple[float, float, float]]:
        var, prior_mean, prior_var = self._noise_and_prior()
        out = []
        for n, s in zip(self.stats.n, self.stats.s, strict=True):
            precision = 1.0 / prior_var + n / var
            out.append(((prior_mean / prior_var + s / var) / precision, self.exploration / math.sqrt(precision), n))
        return out


# --------------------------------------------------------------------------- registry helpers
POLICIES: dict[str, type[BasePolicy]] = {
    OptimaPolicy.name: OptimaPolicy,
    UniformPolicy.name: UniformPolicy,
    FixedOrderPolicy.name: FixedOrderPolicy,
    ThompsonPolicy.name: ThompsonPolicy,
    SlidingWindowTSPolicy.name: SlidingWindowTSPolicy,
    DiscountedTSPolicy.name: DiscountedTSPolicy,
    SlidingWindowUCBPolicy.name: SlidingWindowUCBPolicy,
}


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def split_policy_specs(text: str) -> list[str]:
    """``"optima[window=50,sigma=0.01],uniform"`` -> ``["optima[window=50,sigma=0.01]", "uniform"]``
    (commas inside ``[...]`` or quotes do not split; empty items are dropped)."""
    return [part.strip() for part in _split_top_level(text) if part.strip()]


def _spec_value(key: str, text: str, spec: str) -> Any:
    """A TOML literal (``50``, ``0.97``, ``true``, ``"x"``, ``["vision", "text"]``), else a bare word."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if re.fullmatch(r"[A-Za-z_][\w.+:-]*", text):
        return text
    if text.startswith("[") and text.endswith("]"):  # [vision, text+multimodal]: a list of bare words
        return [_spec_value(key, item.strip(), spec) for item in _split_top_level(text[1:-1]) if item.strip()]
    raise UsageError(f"policy spec {spec!r}: cannot read the value of {key!r} ({text!r}); use a TOML literal.")


def parse_policy_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"optima[window=50,sigma=0.01]"`` -> ``("optima", {"window": 50, "sigma": 0.01})``.

    The policy spec syntax shared by ``distillctl simulate --policies`` and ``compare --policies``:
    a registered name (or alias, or ``prefix:variant``) optionally followed by ``[key=value,...]``.
    Values are TOML literals (``50``, ``0.97``, ``true``, ``"text"``, ``["vision", "text"]``); a bare
    word (``vision+text``) or a list of bare words is read as strings. Commas inside brackets or
    quotes do not split options. Only the syntax is checked here (one-line :class:`UsageError`);
    the name and option keys are checked by the registry and the factory.
    """
    text = spec.strip()
    name, bracket, rest = text.partition("[")
    name = name.strip()
    if not name:
        raise UsageError(f"policy spec {spec!r}: missing the policy name (e.g. optima[window=50]).")
    options: dict[str, Any] = {}
    if not bracket:
        if "]" in name:
            raise UsageError(f"policy spec {spec!r}: ']' without '['.")
        return name, options
    if not rest.endswith("]"):
        raise UsageError(f"policy spec {spec!r}: options must end with ']' (e.g. optima[window=50]).")
    body = rest[:-1].strip()
    for item in _split_top_level(body) if body else []:
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise UsageError(f"policy spec {spec!r}: expected key=value, got {item.strip()!r}.")
        if not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise UsageError(f"policy spec {spec!r}: {key!r} is not an option name.")
        if key in options:
            raise UsageError(f"policy spec {spec!r}: option {key!r} given twice.")
        options[key] = _spec_value(key, value, spec)
    return name, options
