"""Which probe loss should the reward be computed from? (not collected by pytest)

Reads the runs of a ``distillctl compare`` folder and, for each candidate ``loss.reward_loss``
(``total``, ``layerwise``, ``task``), recomputes every episode's reward from the recorded probe terms
(reward_e = (P_{e-1} - P_e) / P_{e-1}), removes the common trend (rewards shrink as the student
converges: a per-run least-squares line over episodes), and reports the signal-to-noise of per-arm
reward differences: the spread of the per-arm mean residuals divided by the pooled within-arm
standard deviation. Burn-in episodes are left out. A reward definition with a higher SNR lets a
bandit tell arms apart in fewer episodes.

    .venv/bin/python tests/benchmarks/reward_snr.py runs/compare [--policies uniform,fixed-order]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

CANDIDATES = ("total", "layerwise", "task")


def residuals(report: dict, key: str) -> list[tuple[str, float]]:
    eps = report["episodes"]
    prev = report["initial_probe"][key]
    rows = []
    for i, e in enumerate(eps):
        p = e["probe"][key]
        if not e.get("burn_in"):
            rows.append((i, e["arm"], (prev - p) / prev if prev else 0.0))
        prev = p
    if len(rows) < 3:
        return []
    xs, ys = [r[0] for r in rows], [r[2] for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return [(arm, y - (my + slope * (x - mx))) for x, arm, y in rows]


def snr(reports: list[dict], key: str) -> tuple[float, int]:
    by_arm: dict[str, list[float]] = {}
    for rep in reports:
        for arm, r in residuals(rep, key):
            by_arm.setdefault(arm, []).append(r)
    arms = {a: v for a, v in by_arm.items() if len(v) >= 2}
    if len(arms) < 2:
        return float("nan"), 0
    means = [statistics.fmean(v) for v in arms.values()]
    within = sum(sum((x - statistics.fmean(v)) ** 2 for x in v) for v in arms.values())
    dof = sum(len(v) - 1 for v in arms.values())
    pooled = (within / dof) ** 0.5 if dof else float("nan")
    return statistics.pstdev(means) / pooled if pooled else float("nan"), sum(len(v) for v in arms.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--policies", default="uniform,fixed-order")
    args = ap.parse_args()
    wanted = {p.strip() for p in args.policies.split(",")}
    reports = []
    for path in sorted(args.folder.glob("*/seed*/report.json")):
        if path.parent.parent.name in wanted:
            reports.append(json.loads(path.read_text()))
    print(f"{len(reports)} runs from {args.folder} ({', '.join(sorted(wanted))})")
    for key in CANDIDATES:
        value, n = snr(reports, key)
        print(f"reward_loss={key:<10} SNR of per-arm reward differences {value:.3f} ({n} episodes)")


if __name__ == "__main__":
    main()
