"""An independent check of the policy defaults (not collected by pytest): bandits built here, not by
``distillctl.simulate.suite``, so that a default tuned on the suite is also measured on environments
it was not tuned on.

Families (each with its own functional forms and seeds): ``expdecay`` (mean_a(t) = c_a·exp(-t/τ_a)
with different τ, so the best arm changes), ``steps`` (piecewise constant, 1–3 switches at random
times), ``walk`` (bounded random walk of every mean), ``shrink`` (all arms decay by one common factor,
gaps and noise shrink together). 3 and 7 arms, noise 0.1x / 0.5x / 1.5x the mean gap, horizons 60
and 500, 20 paired seeds. Regret is normalised by uniform play's expected regret per scenario.

    .venv/bin/python tests/benchmarks/heldout_bandits.py [--seeds 20]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from distillctl.plugins import registry


def make(family: str, k: int, horizon: int, rng: random.Random):
    if family == "expdecay":
        c = [rng.uniform(0.02, 0.1) for _ in range(k)]
        tau = [horizon * rng.uniform(0.1, 1.5) for _ in range(k)]
        return lambda t: [c[a] * math.exp(-t / tau[a]) + 0.002 for a in range(k)]
    if family == "steps":
        cuts = sorted(rng.randrange(horizon // 6, horizon) for _ in range(rng.randint(1, 3)))
        tables = [[rng.uniform(0.01, 0.06) for _ in range(k)] for _ in range(len(cuts) + 1)]
        return lambda t: tables[sum(t >= c for c in cuts)]
    if family == "walk":
        m = [rng.uniform(0.02, 0.06) for _ in range(k)]
        path = []
        step = 0.04 / math.sqrt(horizon)
        for _ in range(horizon):
            m = [min(0.1, max(0.0, x + rng.gauss(0, step))) for x in m]
            path.append(list(m))
        return lambda t: path[t]
    base = [rng.uniform(0.02, 0.08) for _ in range(k)]  # shrink
    rate = horizon * rng.uniform(0.3, 1.0)
    return lambda t: [b * math.exp(-t / rate) for b in base]


def run(policies: list[str], seeds: int) -> None:
    reg = registry("policy")
    rows: dict[str, dict[int, list[float]]] = {p: {60: [], 500: []} for p in policies}
    for horizon in (60, 500):
        for family in ("expdecay", "steps", "walk", "shrink"):
            for k in (3, 7):
                for noise in (0.1, 0.5, 1.5):
                    regret = dict.fromkeys(policies, 0.0)
                    uniform = 0.0
                    for seed in range(seeds):
                        key = f"heldout:{family}:{k}:{noise}:{horizon}:{seed}"
                        means_at = make(family, k, horizon, random.Random(key))
                        means = [means_at(t) for t in range(horizon)]
                        gap = statistics.fmean(max(r) - min(r) for r in means) or 1e-3
                        nrng = random.Random(key + ":noise")
                        scale = [max(max(r), 1e-4) / max(max(means[0]), 1e-4) for r in means] if family == "shrink" else [1.0] * horizon
                        rewards = [[m + nrng.gauss(0, noise * gap * scale[t]) for m in row] for t, row in enumerate(means)]
                        uniform += sum(max(r) - sum(r) / k for r in means)
                        arms = [(f"a{i}",) for i in range(k)]
                        for name in policies:
                            entry, variant = reg.resolve(name)
                            pol = entry.factory(arms=arms, seed=seed, **({"variant": variant} if variant else {}))
                            for t in range(horizon):
                                a = pol.select(t)
                                pol.update(a, rewards[t][a])
                                regret[name] += max(means[t]) - means[t][a]
                    for name in policies:
                        rows[name][horizon].append(regret[name] / uniform if uniform else 0.0)
    print(f"held-out bandits: 24 scenarios x {seeds} seeds; regret / uniform's (lower is better)")
    for name in sorted(policies, key=lambda p: statistics.fmean(rows[p][60] + rows[p][500])):
        print(f"  {name:<16} 60: {statistics.fmean(rows[name][60]):.3f}   500: {statistics.fmean(rows[name][500]):.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()
    run([e.name for e in registry("policy")], args.seeds)
