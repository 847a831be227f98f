"""Start-up benchmarks (not collected by pytest): ``distillctl --help`` wall time, the time to
load the bundled quickstart teacher (in a fresh process, imports included and excluded), and the
time until ``distill --teacher coca-large`` fails offline with its one-line message.

    .venv/bin/python tests/benchmarks/bench_startup.py [--runs 7]
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

LOAD = """
import time, json
t0 = time.perf_counter()
import torch, open_clip  # noqa
t1 = time.perf_counter()
from distillctl.quickstart import load_quickstart_teacher
t = load_quickstart_teacher()
t2 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1}))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    helps = []
    for _ in range(args.runs):
        t = time.perf_counter()
        subprocess.run([str(EXE), "--help"], check=True, capture_output=True)
        helps.append(time.perf_counter() - t)
    loads = []
    for _ in range(max(3, args.runs // 2)):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", LOAD], check=True, capture_output=True, text=True).stdout
        rec = json.loads(out)
        rec["process_s"] = time.perf_counter() - t
        loads.append(rec)
    tags = []
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_HUB_CACHE": cache}
        env.pop("HF_HUB_OFFLINE", None)  # as a new user would run it: no offline flag, just no network
        for _ in range(3):
            t = time.perf_counter()
            r = subprocess.run([str(EXE), "distill", "--preset", "smoke", "--teacher", "coca-large", "--out",
                                f"{cache}/never", "--quiet"], capture_output=True, text=True, env=env)
            tags.append(time.perf_counter() - t)
            assert r.returncode == 1 and "--teacher-weights" in r.stderr + r.stdout, r.stderr
    print(json.dumps({
        "offline_tag_error_median_s": round(statistics.median(tags), 3),
        "help_median_s": round(statistics.median(helps), 3),
        "help_runs_s": [round(x, 3) for x in helps],
        "teacher_load_median_s": round(statistics.median(r["load_s"] for r in loads), 3),
        "teacher_imports_median_s": round(statistics.median(r["imports_s"] for r in loads), 3),
        "teacher_process_median_s": round(statistics.median(r["process_s"] for r in loads), 3),
    }, indent=1))


if __name__ == "__main__":
    main()
