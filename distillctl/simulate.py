"""Synthetic non-stationary bandits: run a policy without torch (``distillctl simulate``).

Each episode the policy picks an arm and earns ``mean[arm](episode) + N(0, noise**2)``; the
means follow a schedule that can change over time (e.g. the best arm changes at episode 200).
The environment's noise comes from its own seeded RNG, so two policies run with the same seed
see the same noise stream for the same pulls.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from distillctl.errors import ConfigError, DistillctlError
from distillctl.policies import arm_name

# A schedule is one of:
#   [m0, m1, ...]                             stationary means
#   [(0, [m0, m1]), (200, [m0', m1']), ...]  piecewise constant; each entry starts at its episode
#   callable(episode) -> [m0, m1, ...]        anything else
Schedule = Sequence[float] | Sequence[tuple[int, Sequence[float]]] | Callable[[int], Sequence[float]]


def _means_fn(schedule: Schedule) -> tuple[Callable[[int], list[float]], int]:
    """(episode -> means, number of arms)."""
    if callable(schedule):
        n = len(list(schedule(0)))
        return (lambda e: [float(m) for m in schedule(e)]), n
    items = list(schedule)
    if not items:
        raise ConfigError(["simulate: the means schedule is empty"])
    if all(isinstance(m, (int, float)) and not isinstance(m, bool) for m in items):
        means = [float(m) for m in items]
        return (lambda e: means), len(means)
    try:
        pieces = sorted((int(start), [float(m) for m in means]) for start, means in items)
    except (TypeError, ValueError):
        raise ConfigError(
            ["simulate: schedule must be a list of means, a list of (start_episode, means) pairs, or a callable"]
        ) from None
    sizes = {len(m) for _, m in pieces}
    if len(sizes) != 1:
        raise ConfigError([f"simulate: every schedule entry needs the same number of arms, got sizes {sorted(sizes)}"])
    if pieces[0][0] > 0:
        raise ConfigError([f"simulate: the schedule must start at episode 0, first entry starts at {pieces[0][0]}"])

    def means_at(episode: int) -> list[float]:
        current = pieces[0][1]
        for start, means in pieces:
            if start > episode:
                break
            current = means
        return current

    return means_at, sizes.pop()


def simulate(
    policy: str | Callable[..., Any],
    schedule: Schedule,
    episodes: int,
    seed: int = 0,
    noise: float = 0.01,
    *,
    arms: Sequence[Sequence[str]] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``policy`` for ``episodes`` episodes against a synthetic bandit.

    ``policy`` is a registered policy name (``"optima"``) or a factory called as
    ``factory(arms=..., seed=..., **options)``. ``arms`` defaults to one single-module arm per
    schedule column, named ``arm0``, ``arm1``, ...

    Returns a JSON-serialisable dict: ``arms`` (names), ``sequence`` (arm index per episode),
    ``rewards``, ``best`` (index of the best arm per episode), ``pulls`` (name -> count),
    ``regret`` (cumulative pseudo-regret: sum of best mean - played mean), ``regret_curve``
    (cumulative, per episode), ``best_fraction`` (share of episodes that played the best arm)
    and ``posterior`` (the policy's final posterior).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError([f"simulate: episodes must be a positive integer, got {episodes!r}"])
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ConfigError([f"simulate: noise must be a number >= 0, got {noise!r}"])
    means_at, n_arms = _means_fn(schedule)
    if arms is None:
        arm_list = [(f"arm{i}",) for i in range(n_arms)]
    else:
        arm_list = [tuple(a) for a in arms]
        if len(arm_list) != n_arms:
            raise ConfigError([f"simulate: {len(arm_list)} arms but the schedule has {n_arms} means per episode"])

    if isinstance(policy, str):
        from distillctl.plugins import registry

        factory: Callable[..., Any] = registry("policy").get(policy).factory
    else:
        factory = policy
    pol = factory(arms=arm_list, seed=seed, **(options or {}))

    env = random.Random(f"distillctl-simulate:{seed}")  # independent of the policy's RNG
    sequence: list[int] = []
    rewards: list[float] = []
    best: list[int] = []
    regret_curve: list[float] = []
    regret = 0.0
    for episode in range(episodes):
        means = means_at(episode)
        if len(means) != n_arms:
            raise DistillctlError(f"simulate: schedule gave {len(means)} means at episode {episode}, expected {n_arms}.")
        arm = pol.select(episode)
        reward = means[arm] + (env.gauss(0.0, noise) if noise > 0 else 0.0)
        pol.update(arm, reward)
        top = max(range(n_arms), key=lambda i: means[i])
        regret += means[top] - means[arm]
        sequence.append(arm)
        rewards.append(reward)
        best.append(top)
        regret_curve.append(regret)

    names = [arm_name(a) for a in arm_list]
    pulls = {name: 0 for name in names}
    for arm in sequence:
        pulls[names[arm]] += 1
    return {
        "arms": names,
        "sequence": sequence,
        "rewards": rewards,
        "best": best,
        "pulls": pulls,
        "regret": regret,
        "regret_curve": regret_curve,
        "best_fraction": sum(1 for a, b in zip(sequence, best, strict=True) if a == b) / episodes,
        "posterior": pol.posterior(),
    }
