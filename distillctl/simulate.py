"""Synthetic non-stationary bandits: run a policy without torch (``distillctl simulate``).

Each episode the policy picks an arm and earns ``mean[arm](episode) + N(0, noise**2)``; the
means follow a schedule that can change over time (e.g. the best arm changes at episode 200).
The environment's noise comes from its own seeded RNG, one draw per arm per episode, so two
policies run with the same seed get the same reward whenever they play the same arm in the same
episode (paired comparisons).

:func:`suite` is a broad set of environment families (rewards decaying at different rates so the
best arm changes, abrupt switches, slow drift, every arm decaying together; 3 and 7 arms; three
noise levels) and :func:`run_suite` runs policies on all of it with paired seeds at several
horizons; ``distillctl simulate --suite`` prints its table.
"""

from __future__ import annotations

import math
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

    ``policy`` is a policy spec (a registered name, alias or ``prefix:variant``, optionally with
    options: ``"optima[window=50]"``, see :func:`distillctl.policies.parse_policy_spec`) or a
    factory called as ``factory(arms=..., seed=..., **options)``. ``options`` override the spec's. ``arms`` defaults to one single-module arm per
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
        factory, spec_options = resolve_policy(policy)
        options = {**spec_options, **(options or {})}
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
        # one draw per arm per episode, whichever arm is played: two policies that play the same
        # arm in the same episode get the same reward (common random numbers)
        draws = [env.gauss(0.0, noise) for _ in range(n_arms)] if noise > 0 else [0.0] * n_arms
        reward = means[arm] + draws[arm]
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


# --------------------------------------------------------------------------- policy specs
def resolve_policy(spec: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``"optima[window=50]"`` -> (factory taking ``arms=, seed=, **options``, the spec's options).

    Names resolve through the policy registry, so aliases (``random``) and prefix entries
    (``name:variant``, whose factory also receives ``variant=``) work like in ``distill``. An unknown
    name or option, a value of the wrong type for the factory's annotation, a missing required option
    and a factory that raises are one :class:`~distillctl.errors.DistillctlError` line, raised here (not
    mid-run); a plugin's failure names the plugin and its version. The policies the returned factory
    builds run every method under :func:`distillctl.registry.plugin_errors`.
    """
    from distillctl.plugins import registry
    from distillctl.policies import parse_policy_spec
    from distillctl.registry import Guarded, plugin_errors

    name, options = parse_policy_spec(spec)
    found = registry("policy").resolve(name)
    assert found is not None
    entry, variant = found
    label = entry.describe(spec.strip())  # "policy 'x[k=v]' from plugin dist 1.0" / "policy 'optima' (built-in)"
    engine = {"arms", "seed", "variant"}
    known = entry.options()
    if known is not None:
        bad = sorted(set(options) - (set(known) - engine))
        if bad:
            valid = ", ".join(k for k in known if k not in engine) or "(none)"
            raise DistillctlError(f"{label}: unknown option {', '.join(map(repr, bad))} (valid: {valid}).")
    problems = [f"{k}: {wrong}" for k, v in options.items() if (wrong := entry.check_option(k, v)) is not None]
    missing = [k for k in entry.required_options(engine) if k not in options]
    if missing:
        problems.append(f"required option {', '.join(map(repr, missing))} missing (e.g. {name}[{missing[0]}=VALUE])")
    if problems:
        raise DistillctlError(f"{label}: {'; '.join(problems)}.")

    def factory(**kwargs: Any) -> Any:
        extra = {"variant": variant} if variant is not None else {}
        with plugin_errors(entry, name=name):
            policy = entry.factory(**extra, **kwargs)
        # a third-party policy's methods fail as one line naming the plugin; a built-in's failure is our bug
        return policy if entry.provenance.builtin else Guarded(entry, policy, name=name)

    try:  # bad option values fail here, in one line, not in the middle of a run
        factory(arms=[(f"arm{i}",) for i in range(8)], seed=0, **options)  # arms as simulate names them
    except ConfigError as exc:
        raise DistillctlError(f"{label}: {'; '.join(exc.problems)}.") from None
    return factory, options


# --------------------------------------------------------------------------- the suite
NOISE_LEVELS: dict[str, float] = {"low": 0.25, "mid": 1.0, "high": 3.0}
"""Noise standard deviation in units of :data:`GAP`, the typical gap between arm means."""

GAP = 0.02
"""Typical gap between arm means in the suite (means lie in about 0.005-0.15)."""

FAMILIES: tuple[str, ...] = ("decay", "switch", "drift", "decay-together")


def _decay(rng: random.Random, k: int, horizon: int) -> tuple[Callable[[int], list[float]], Callable[[int], float]]:
    # each arm: b + a * exp(-t / tau), rates differ, so the arm that starts best is overtaken
    arms = [(rng.uniform(0.03, 0.12), horizon * 10 ** rng.uniform(-1.0, 0.3), rng.uniform(0.0, 0.03)) for _ in range(k)]
    return (lambda t: [b + a * math.exp(-t / tau) for a, tau, b in arms]), (lambda t: 1.0)


def _switch(rng: random.Random, k: int, horizon: int) -> tuple[Callable[[int], list[float]], Callable[[int], float]]:
    # piecewise constant; 1-3 abrupt switches, each moving the best arm elsewhere
    pieces = [(0, [rng.uniform(0.01, 0.08) for _ in range(k)])]
    for start in sorted(rng.sample(range(int(0.15 * horizon), int(0.9 * horizon)), 1 + rng.randrange(3))):
        old_best = max(range(k), key=lambda i: pieces[-1][1][i])
        while True:
            means = [rng.uniform(0.01, 0.08) for _ in range(k)]
            if max(range(k), key=lambda i: means[i]) != old_best:
                break
        pieces.append((start, means))

    def means_at(t: int) -> list[float]:
        current = pieces[0][1]
        for start, means in pieces:
            if start > t:
                break
            current = means
        return current

    return means_at, (lambda t: 1.0)


def _drift(rng: random.Random, k: int, horizon: int) -> tuple[Callable[[int], list[float]], Callable[[int], float]]:
    # slow sinusoidal drift (periods of 0.7-2 horizons): rankings change gradually
    arms = [(rng.uniform(0.03, 0.07), rng.uniform(0.01, 0.04), horizon * rng.uniform(0.7, 2.0), rng.uniform(0, 6.283))
            for _ in range(k)]
    return (lambda t: [max(c + a * math.sin(6.283185307179586 * t / p + ph), 0.001) for c, a, p, ph in arms]), (lambda t: 1.0)


def _decay_together(rng: random.Random, k: int, horizon: int) -> tuple[Callable[[int], list[float]], Callable[[int], float]]:
    # every arm's reward (and its noise) shrinks together as the student converges: the scale
    # falls ~5-150x, the best arm stays the best; tests that a policy is scale-free
    gains = [rng.uniform(0.02, 0.12) for _ in range(k)]
    tau = horizon * rng.uniform(0.2, 0.6)
    return (lambda t: [g * math.exp(-t / tau) for g in gains]), (lambda t: math.exp(-t / tau))


_MAKERS = {"decay": _decay, "switch": _switch, "drift": _drift, "decay-together": _decay_together}


class Scenario:
    """One environment family at one arm count and noise level: ``decay/3arms/mid``.

    Every seed draws its own instance of the family (means, rates, switch times) from an RNG keyed
    by (name, horizon, seed), so a seed is the same environment for every policy; the reward noise
    of every (episode, arm) comes from a second RNG with the same key. :meth:`instance` returns
    the means and noise tables.
    """

    def __init__(self, family: str, arms: int, noise: str) -> None:
        if family not in _MAKERS:
            raise ConfigError([f"simulate: unknown scenario family {family!r} (valid: {', '.join(FAMILIES)})"])
        if noise not in NOISE_LEVELS:
            raise ConfigError([f"simulate: unknown noise level {noise!r} (valid: {', '.join(NOISE_LEVELS)})"])
        self.family, self.arms, self.noise = family, arms, noise
        self.name = f"{family}/{arms}arms/{noise}"

    def instance(self, horizon: int, seed: int) -> tuple[list[list[float]], list[list[float]]]:
        """(means[t][arm], noisy rewards[t][arm]) for ``horizon`` episodes."""
        key = f"distillctl-suite:{self.name}:{horizon}:{seed}"
        means_at, noise_scale = _MAKERS[self.family](random.Random(key + ":env"), self.arms, horizon)
        sd = NOISE_LEVELS[self.noise] * GAP
        noise = random.Random(key + ":noise")
        means = [means_at(t) for t in range(horizon)]
        rewards = [[m + noise.gauss(0.0, sd * noise_scale(t)) for m in row] for t, row in enumerate(means)]
        return means, rewards

    def __repr__(self) -> str:
        return f"Scenario({self.name!r})"


def suite(arms: Sequence[int] = (3, 7), families: Sequence[str] = FAMILIES,
          noises: Sequence[str] = tuple(NOISE_LEVELS)) -> list[Scenario]:
    """Every family x arm count x noise level (24 scenarios by default)."""
    return [Scenario(f, k, n) for f in families for k in arms for n in noises]


def _run_instance(factory: Callable[..., Any], options: dict[str, Any], seed: int,
                  means: list[list[float]], rewards: list[list[float]]) -> tuple[float, int]:
    """(pseudo-regret, episodes on the best arm) of one policy on one instance."""
    k = len(means[0])
    pol = factory(arms=[(f"arm{i}",) for i in range(k)], seed=seed, **options)
    regret, on_best = 0.0, 0
    for t, row in enumerate(means):
        arm = pol.select(t)
        pol.update(arm, rewards[t][arm])
        top = max(row)
        regret += top - row[arm]
        on_best += row[arm] == top
    return regret, on_best


def run_suite(
    policies: Sequence[str | tuple[str, Callable[..., Any], dict[str, Any]]],
    horizons: Sequence[int] = (60, 500),
    seeds: int = 20,
    scenarios: Sequence[Scenario] | None = None,
) -> dict[str, Any]:
    """Run every policy on every scenario x horizon x seed (seeds 0..N-1, paired across policies).

    ``policies`` are specs (``"optima[window=50]"``) or ``(label, factory, options)`` triples.

    Regret is normalised per scenario and horizon: a policy's total pseudo-regret over the seeds
    divided by the total *expected regret of uniform random play* over the same instances
    (``sum_t max_a mean - average_a mean``), so every scenario weighs alike, 1.0 = as bad as random
    and 0.0 = always on the best arm. Per horizon, each row gets the mean normalised regret over
    the scenarios, the mean rank among the given policies across scenarios (1 = lowest regret;
    ties share ranks) and the share of episodes on the best arm.

    Returns ``{"horizons", "seeds", "scenarios", "rows", "per_scenario"}``; ``rows`` (sorted by mean
    normalised regret over the horizons) hold ``policy``, and per horizon ``h``:
    ``regret[h]``, ``rank[h]``, ``best_share[h]``.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError([f"simulate: seeds must be a positive integer, got {seeds!r}"])
    hs = list(horizons)
    if not hs or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hs):
        raise ConfigError([f"simulate: horizons must be positive integers, got {list(horizons)!r}"])
    resolved: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []
    for p in policies:
        if isinstance(p, str):
            factory, options = resolve_policy(p)
            resolved.append((p.strip(), factory, options))
        else:
            resolved.append(p)
    if not resolved:
        raise ConfigError(["simulate: no policies to run"])
    labels = [label for label, _, _ in resolved]
    if len(set(labels)) != len(labels):
        raise ConfigError([f"simulate: a policy is listed twice in {labels}"])
    scenario_list = list(scenarios) if scenarios is not None else suite()

    per_scenario: list[dict[str, Any]] = []
    for h in hs:
        for sc in scenario_list:
            regret = dict.fromkeys(labels, 0.0)
            on_best = dict.fromkeys(labels, 0)
            uniform = 0.0
            for seed in range(seeds):
                means, rewards = sc.instance(h, seed)
                uniform += sum(max(row) - sum(row) / len(row) for row in means)
                for label, factory, options in resolved:
                    r, b = _run_instance(factory, options, seed, means, rewards)
                    regret[label] += r
                    on_best[label] += b
            per_scenario.append({
                "scenario": sc.name, "horizon": h,
                "regret": {lab: regret[lab] / uniform if uniform > 0 else 0.0 for lab in labels},
                "best_share": {lab: on_best[lab] / (seeds * h) for lab in labels},
            })
    for cell in per_scenario:  # ranks within each scenario x horizon, ties share the mean rank
        ordered = sorted(labels, key=lambda lab: cell["regret"][lab])
        ranks: dict[str, float] = {}
        i = 0
        while i < len(ordered):
            j = i
            while j + 1 < len(ordered) and cell["regret"][ordered[j + 1]] == cell["regret"][ordered[i]]:
                j += 1
            for lab in ordered[i : j + 1]:
                ranks[lab] = (i + j) / 2 + 1
            i = j + 1
        cell["rank"] = ranks

    rows = []
    for lab in labels:
        row: dict[str, Any] = {"policy": lab, "regret": {}, "rank": {}, "best_share": {}}
        for h in hs:
            cells = [c for c in per_scenario if c["horizon"] == h]
            for key in ("regret", "rank", "best_share"):
                row[key][h] = sum(c[key][lab] for c in cells) / len(cells)
        rows.append(row)
    rows.sort(key=lambda r: sum(r["regret"].values()) / len(hs))
    return {"horizons": hs, "seeds": seeds, "scenarios": [sc.name for sc in scenario_list],
            "rows": rows, "per_scenario": per_scenario}
