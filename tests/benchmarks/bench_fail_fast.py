"""Fail-fast timings (not collected by pytest): how long the cheap paths take, against their budgets.

These were wall-clock asserts inside unit tests, which flake on a loaded machine; here they are
measured and reported instead (exit code 1 when a budget is exceeded)::

    .venv/bin/python tests/benchmarks/bench_fail_fast.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner


def timed(fn) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    from distillctl.cli import app
    from distillctl.errors import WeightsError
    from distillctl.plugins import registry

    tmp = Path(tempfile.mkdtemp())
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(tmp / "hf")

    def inspect_large() -> None:
        res = CliRunner().invoke(app, ["inspect", "--teacher", "coca-large", "--json"])
        assert res.exit_code == 0, res.output

    def uncached_tag() -> None:
        try:
            registry("teacher").create("coca-base", weights="laion2b_s13b_b90k", device="cpu")
        except WeightsError:
            return
        raise AssertionError("an uncached tag offline must fail")

    def meta_build() -> None:
        registry("teacher").create("coca-large", device="meta")

    results = {
        "inspect coca-large offline (budget 15 s)": (timed(inspect_large), 15.0),
        "uncached tag fails offline (budget 5 s)": (timed(uncached_tag), 5.0),
        "coca-large on meta (budget 5 s)": (timed(meta_build), 5.0),
    }
    print(json.dumps({k: round(v, 2) for k, (v, _) in results.items()}, indent=2))
    return int(any(v > budget for v, budget in results.values()))


if __name__ == "__main__":
    sys.exit(main())
