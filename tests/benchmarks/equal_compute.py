"""OPTIMA at equal compute: the README's tables, regenerated (not collected by pytest).

    .venv/bin/python tests/benchmarks/equal_compute.py [--out runs/equal-compute] [--presets quickstart,...] [--read]

For each preset, one ``distillctl compare`` of optima, optima@combinations, uniform, fixed-order and
fixed-order@all (plain layerwise distillation, LWD) over seeds 0,1,2 at **equal training FLOPs**
(``--budget flops``: every run gets what 150 full all-module steps cost) with module-local steps
(``train.forward = "arm"``: a step runs only the towers its arm needs), 1 thread per run. Then, from
the runs' reports, one Markdown table per preset:

* final probe loss (mean ± std over seeds);
* compute to LWD's final probe loss: the training FLOPs at the first episode whose probe loss is at
  or below fixed-order@all's mean final probe loss, as a fraction of the budget (``-``: never reached;
  ``k/3``: how many seeds reached it);
* test-split i2t R@1 and teacher-forced token accuracy of the student;
* steps taken, and the pull counts;
* the per-arm reward SNR of the uniform and fixed-order runs (the spread of the per-arm mean rewards after removing each run's
  trend, over the pooled within-arm spread; ``tests/benchmarks/reward_snr.py``).

``--read`` only re-reads existing compare folders (no runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_snr import snr  # noqa: E402

POLICIES = "optima,optima@combinations,uniform,fixed-order,fixed-order@all"
# every preset on the same budget: what 150 full all-module steps cost (quickstart itself now runs 18 x 5)
EXTRA = {"quickstart": ["train.episodes=15", "train.episode_steps=10"]}
EXE = Path(sys.executable).with_name("distillctl")
LAYERWISE = "-layerwise"  # the folder (beside the preset's) and row of optima rewarded on the layerwise probe loss


def run_compare(preset: str, out: Path, seeds: str, policies: str = POLICIES, extra: tuple[str, ...] = ()) -> None:
    cmd = [str(EXE), "compare", "--preset", preset, "--policies", policies, "--seeds", seeds, "--budget", "flops",
           "--set", "train.forward=arm", "--set", "train.threads=1", "--set", "eval.teacher=false",
           *(x for kv in [*EXTRA.get(preset, []), *extra] for x in ("--set", kv)),
           "--out", str(out), "--overwrite", "--quiet"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def reports(folder: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*/seed*/report.json")):
        runs.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text()))
    for path in sorted(folder.with_name(folder.name + LAYERWISE).glob("optima/seed*/report.json")):
        runs.setdefault("optima" + LAYERWISE, []).append(json.loads(path.read_text()))
    return runs


def first_flops(report: dict, target: float) -> float | None:
    for e in report["episodes"]:
        if e["probe"]["total"] <= target:
            return float(e["flops_total"])
    return None


def ms(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def table(preset: str, runs: dict[str, list[dict]]) -> str:
    lwd = runs.get("fixed-order-all", [])
    target = statistics.fmean(r["final_probe"]["total"] for r in lwd) if lwd else float("-inf")
    budget = next(iter(runs.values()))[0]["compute"]["budget_flops"]
    lines = [f"| {preset} | final probe loss | compute to LWD's {target:.3f} | i2t R@1 | token acc | steps | pulls |",
             "|---|---|---|---|---|---|---|"]
    for label in ("optima", "optima" + LAYERWISE, "optima-combinations", "uniform", "fixed-order", "fixed-order-all"):
        reps = runs.get(label)
        if not reps:
            continue
        hit = [f / budget for f in (first_flops(r, target) for r in reps) if f is not None]
        pulls: dict[str, int] = {}
        for r in reps:
            for a in r["arms"]:
                pulls[a["arm"]] = pulls.get(a["arm"], 0) + a["pulls"]
        name = {"fixed-order-all": "**fixed-order@all** (LWD)", "optima": "**optima** (reward: total probe loss, the default)",
                "optima" + LAYERWISE: "optima, `reward_loss=layerwise` (0.2.0's default)"}.get(label, label.replace("-combinations", "@combinations"))
        ev = [r["eval"]["student"] for r in reps if r.get("eval", {}).get("student")]
        lines.append(
            f"| {name} | {ms([r['final_probe']['total'] for r in reps])} | "
            f"{ms(hit, 2) if hit else '-'} ({len(hit)}/{len(reps)}) | {ms([e['i2t_r1'] for e in ev])} | "
            f"{ms([e['tf_token_acc'] for e in ev])} | {statistics.fmean(r['steps'] for r in reps):.0f} | "
            f"{', '.join(f'{a} {n}' for a, n in pulls.items())} |")
    unbiased = [r for label in ("uniform", "fixed-order") for r in runs.get(label, [])]  # arms not chosen by reward
    value, n = snr(unbiased, "layerwise")
    total, _ = snr(unbiased, "total")
    lines.append("")
    lines.append(f"Per-arm reward SNR (uniform and fixed-order runs, {n} episodes): layerwise probe loss {value:.2f}, "
                 f"total {total:.2f}; budget {budget / 1e12:.2f} TFLOP of training per run.")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/equal-compute"))
    ap.add_argument("--presets", default="quickstart,quickstart-hard,quickstart-uneven")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--read", action="store_true", help="only read existing compare folders")
    args = ap.parse_args()
    for preset in args.presets.split(","):
        folder = args.out / preset
        if not args.read:
            run_compare(preset, folder, args.seeds)
            # 0.2.0's reward, for the row beside the default (loss.reward_loss = auto: total with module-local steps)
            run_compare(preset, folder.with_name(folder.name + LAYERWISE), args.seeds, "optima", ("loss.reward_loss=layerwise",))
        print(table(preset, reports(folder)), flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
