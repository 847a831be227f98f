"""What a module-local step costs against an all-module step, from the runs' own report.json (not collected by pytest).

    .venv/bin/python tests/benchmarks/bench_arm_step.py [--preset quickstart] [--threads 2] [--out /tmp/bench-arm-step]

Two runs of the preset, the same length (15 episodes x 10 steps, ``train.budget = "steps"``) and threads,
evaluation off: ``fixed-order`` over the single arms with ``train.forward = "arm"`` (vision, text,
multimodal in turn), and ``fixed-order@all`` (every module, every step: the full step). Prints, per arm,
the compute seconds per step (``compute_s / steps`` of its episodes, the first episode of each run left
out as warm-up) divided by the all-module run's, next to the ratio of the FLOPs the run counted for that
arm's step (``report.json`` ``compute.step_flops``): the time says what a step costs, the FLOPs whether
the count predicts it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

EXE = Path(sys.executable).with_name("distillctl")


def run(preset: str, out: Path, threads: int, policy: list[str]) -> dict:
    cmd = [str(EXE), "distill", "--preset", preset, *policy, "--out", str(out), "--overwrite", "--quiet",
           "--set", "train.episodes=15", "--set", "train.episode_steps=10", "--set", "train.budget=steps",
           "--set", "train.forward=arm", "--set", f"train.threads={threads}", "--set", "eval.evaluators=[]"]
    subprocess.run(cmd, check=True)
    return json.loads((out / "report.json").read_text())


def per_step(report: dict) -> dict[str, float]:
    by_arm: dict[str, list[float]] = {}
    for e in report["episodes"][1:]:
        by_arm.setdefault(e["arm"], []).append(e["compute_s"] / e["steps"])
    return {arm: statistics.median(v) for arm, v in by_arm.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-arm-step"))
    args = ap.parse_args()
    local = run(args.preset, args.out / "arms", args.threads, ["--policy", "fixed-order"])
    full = run(args.preset, args.out / "all", args.threads, ["--policy", "fixed-order", "--arms", "all"])
    all_s = statistics.median(per_step(full).values())
    flops_all = full["compute"]["full_step_flops"]
    rows = {arm: {"ms_per_step": round(1000 * s, 1), "time_ratio": round(s / all_s, 3),
                  "flops_ratio": round(local["compute"]["step_flops"][arm] / flops_all, 3)}
            for arm, s in per_step(local).items()}
    print(json.dumps({"threads": args.threads, "all_modules_ms_per_step": round(1000 * all_s, 1), "arms": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
