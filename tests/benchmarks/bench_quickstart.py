"""Quickstart benchmark (not collected by pytest): run ``distillctl distill --preset quickstart``
N times as a user would (fresh process each), and report the wall times, the median, and the
student's / teacher's image->text R@1 on the shapes test split.

    .venv/bin/python tests/benchmarks/bench_quickstart.py [--runs 3] [--out /tmp/bench-qs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXE = Path(sys.executable).with_name("distillctl")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-quickstart"))
    p.add_argument("--preset", default="quickstart")
    args = p.parse_args()
    rows = []
    for i in range(args.runs):
        out = args.out / f"run{i}"
        t = time.perf_counter()
        subprocess.run([str(EXE), "distill", "--preset", args.preset, "--out", str(out), "--overwrite", "--quiet"], check=True)
        wall = time.perf_counter() - t
        rep = json.loads((out / "report.json").read_text())
        s, te = rep["eval"]["student"]["i2t_r1"], rep["eval"]["teacher"]["i2t_r1"]
        rows.append({"wall_s": round(wall, 1), "student_i2t_r1": s, "teacher_i2t_r1": te, "ratio": round(s / te, 3),
                     "compute_fraction": round(rep["timings"]["compute_fraction"], 3),
                     "arms": [e["arm"] for e in rep["episodes"]]})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"median_wall_s": statistics.median(r["wall_s"] for r in rows),
                      "median_ratio": statistics.median(r["ratio"] for r in rows)}, indent=1))


if __name__ == "__main__":
    main()
