"""HTML reports (``report.html``, ``compare.html``, ``simulate.html``) and ``distillctl report RUN``.

The HTML tests render synthetic documents shaped like the real ones, so they do not depend on the
engine; one module-scoped smoke run checks that a real ``report.json`` renders too. The headless
Chromium test (slow) proves the pages render with no network at all.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from distillctl.cli import app
from distillctl.report import (
    markdown,
    print_run_summary,
    render_compare_html,
    render_run_html,
    render_simulate_html,
    write_reports,
)

ARMS = ("vision", "text", "multimodal")


def synthetic_report(episodes: int = 30, seed: int = 0) -> dict[str, Any]:
    """A report.json-shaped dict: 3 arms, a bandit-like pull pattern, decreasing probe loss."""
    rng = random.Random(seed)
    post = [{"mean": 0.1, "std": 0.05, "n": 0.0} for _ in ARMS]
    probe = {"total": 36.0, "task": 13.0, "kd": 20.0, "layerwise": 3.0, "lw/vision": 0.6, "lw/text": 1.1, "lw/multimodal": 1.3}
    initial, eps, pulls, sums = dict(probe), [], dict.fromkeys(ARMS, 0), dict.fromkeys(ARMS, 0.0)
    for ep in range(1, episodes + 1):
        i = (ep - 1) if ep <= 3 else max(range(3), key=lambda j: post[j]["mean"] + rng.gauss(0, post[j]["std"]))
        arm = ARMS[i]
        reward = max(0.0, [0.08, 0.05, 0.03][i] * math.exp(-ep / 20) + rng.gauss(0, 0.01))
        probe = {k: v * (1 - reward * (1.5 if k in ("total", f"lw/{arm}") else 0.8)) for k, v in probe.items()}
        pulls[arm] += 1
        sums[arm] += reward
        n = post[i]["n"] + 1
        post = [dict(p) for p in post]
        post[i] = {"mean": post[i]["mean"] + (reward - post[i]["mean"]) / n, "std": 0.05 / math.sqrt(n + 1), "n": n}
        eps.append({"episode": ep, "arm": arm, "reward": reward, "probe_loss": probe["total"], "probe": dict(probe),
                    "train": {"total": probe["total"] * 1.1, "task": probe["task"], "kd": probe["kd"]},
                    "lr": 5e-4 * min(1.0, ep / 5), "step": 2 * ep, "posterior": post})
    return {
        "distillctl_version": "0.1.0",
        "config": {"teacher": {"name": "quickstart"}, "student": {"name": "layer-subset"},
                   "policy": {"name": "optima", "arms": "single"}, "data": {"name": "shapes"}, "eval": {"split": "test"}},
        "environment": {"python": "3.11", "torch": "2.x", "device": "cpu", "cuda": None},
        "teacher": {"name": "quickstart", "params": 3718145},
        "student": {"params": 1933185, "description": "layer-subset of quickstart (vision 3, text 2, multimodal 2)"},
        "sizes": {"teacher_params": 3718145, "student_params": 1933185, "compression": 1.92,
                  "student_file_bytes": 7748732, "export_dtype": "fp32"},
        "arms": [{"arm": a, "pulls": pulls[a], "mean_reward": (sums[a] / pulls[a]) if pulls[a] else None} for a in ARMS],
        "episodes": eps,
        "initial_probe": initial,
        "final_probe": eps[-1]["probe"],
        "steps": 2 * episodes,
        "samples": 16 * episodes,
        "timings": {"data_s": 0.5, "compute_s": 40.0, "probe_s": 2.0, "train_s": 42.5, "total_s": 50.0,
                    "samples_per_s": 11.3, "compute_fraction": 0.94},
        "eval": {"student": {"i2t_r1": 0.61, "t2i_r1": 0.58, "tf_token_acc": 0.52},
                 "teacher": {"i2t_r1": 0.92, "t2i_r1": 0.89, "tf_token_acc": 0.78}},
        "skipped": {"count": 0, "first": None, "summary": None},
    }


def synthetic_compare() -> dict[str, Any]:
    rng = random.Random(1)
    rows = []
    for k, (label, policy) in enumerate([("optima", "optima"), ("uniform", "uniform"),
                                         ("fixed-order", "fixed-order"), ("fixed-order@all", "fixed-order")]):
        curves = [[36.0 * math.exp(-(0.05 - 0.008 * k) * t) + rng.gauss(0, 0.3) for t in range(31)] for _ in range(3)]
        finals = [c[-1] for c in curves]
        m = sum(finals) / 3
        rows.append({"label": label, "seeds": 3, "policy": policy, "arms": "all" if "@" in label else "single",
                     "final_probe": [m, 0.4 + 0.1 * k], "steps_to_target": [40.0 + 8 * k, 4.0] if k < 3 else [None, None],
                     "reached": "3/3" if k < 3 else "0/3",
                     "eval": {"i2t_r1": [0.6 - 0.05 * k, 0.02], "t2i_r1": [0.55 - 0.04 * k, 0.03]},
                     "pulls": {"vision": 40 - 5 * k, "text": 30, "multimodal": 20 + 5 * k} if "@" not in label
                     else {"vision+text+multimodal": 90},
                     "curves": curves})
    return {"target_probe_loss": 9.5, "rows": rows}


def synthetic_simulate() -> dict[str, Any]:
    return {"schedule": [[0, [0.05, 0.02, 0.01]], [200, [0.01, 0.02, 0.05]]], "episodes": 400, "seeds": 10, "noise": 0.01,
            "rows": [{"policy": p, "regret_mean": r, "regret_std": r / 8, "best_fraction_mean": b, "best_fraction_std": 0.05,
                      "pulls": {"0": 1500, "1": 1000, "2": 1500}}
                     for p, r, b in (("optima", 3.1, 0.81), ("uniform", 8.0, 0.33), ("fixed-order", 8.1, 0.33))]}


def synthetic_suite() -> dict[str, Any]:
    """The shape of ``distillctl.simulate.run_suite``: regret, rank and best-arm share per horizon."""
    rows = [{"policy": p, "regret": {60: r, 500: r / 2}, "rank": {60: i + 1.0, 500: i + 1.0},
             "best_share": {60: b, 500: b + 0.1}}
            for i, (p, r, b) in enumerate((("optima", 0.3, 0.6), ("sw-ts", 0.4, 0.55), ("uniform", 1.0, 0.33)))]
    cells = [{"scenario": sc, "horizon": h, "regret": {"optima": 0.3, "sw-ts": 0.4, "uniform": 1.0},
              "best_share": {"optima": 0.6, "sw-ts": 0.5, "uniform": 0.33}, "rank": {"optima": 1, "sw-ts": 2, "uniform": 3}}
             for sc in ("abrupt", "drift") for h in (60, 500)]
    return {"horizons": [60, 500], "seeds": 5, "scenarios": ["abrupt", "drift"], "rows": rows, "per_scenario": cells}


EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//)"""
                      r"""|(?:url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//)|(?:@import)""", re.I)


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "<img" not in page.lower()
    # the only absolute URLs left are XML namespace names, which are never fetched
    for m in re.finditer(r"https?://", page):
        assert re.search(r'xmlns(?::\w+)?="$', page[max(0, m.start() - 20):m.start()]), page[m.start() - 60:m.end() + 40]
    assert "<!DOCTYPE svg" not in page and "<?xml" not in page and "<metadata" not in page


def svg_count(page: str) -> int:
    return len(re.findall(r"<svg\b", page))


def test_run_html_holds_the_charts_and_nothing_external() -> None:
    page = render_run_html(synthetic_report())
    assert_self_contained(page)
    assert svg_count(page) >= 4  # timeline, rewards + posterior, losses, pull counts
    for title in ("Arm timeline", "posterior", "probe loss", "Pull counts", "Sizes", "Evaluation", "Timings"):
        assert title in page, title
    # element ids are unique across the charts on the page (inline SVGs share one id space)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert render_run_html(synthetic_report()).split("<footer>")[0] == page.split("<footer>")[0]  # deterministic


def test_run_html_tolerates_missing_keys_and_shows_an_error() -> None:
    page = render_run_html({"error": "CUDA out of memory during episode 3", "episodes": []})
    assert '<div class="error">Run error: CUDA out of memory during episode 3</div>' in page
    assert_self_contained(page)
    report = synthetic_report(5)
    for key in ("sizes", "timings", "eval", "environment", "skipped"):
        report.pop(key)
    report["world_size"] = 2
    assert svg_count(render_run_html(report)) >= 4
    assert "world size 2" in markdown(report)
    print_run_summary(report, Path("run"), quiet=False)
    print_run_summary(report, Path("run"), quiet=True)
    for empty in ({}, {"episodes": None, "arms": None, "config": None}):  # nothing at all still renders
        assert_self_contained(render_run_html(empty))
        assert markdown(empty).startswith("# distillctl report")
        print_run_summary(empty, Path("run"))
    assert_self_contained(render_compare_html({}))
    assert_self_contained(render_simulate_html({}))


def test_compare_html_draws_bars_metrics_pulls_and_curves() -> None:
    summary = synthetic_compare()
    page = render_compare_html(summary)
    assert_self_contained(page)
    assert svg_count(page) == 4  # bars, curves, eval metrics, pull shares
    assert "fixed-order@all" in page and "0/3" in page
    for r in summary["rows"]:
        del r["curves"]
    assert svg_count(render_compare_html(summary)) == 3


def test_simulate_html_renders_classic_and_suite_rows() -> None:
    page = render_simulate_html(synthetic_simulate())
    assert_self_contained(page)
    assert svg_count(page) == 3  # regret, best-arm share, the bandit's schedule
    assert "regret_mean" in page and "optima" in page
    suite = render_simulate_html(synthetic_suite())
    assert_self_contained(suite)
    assert svg_count(suite) == 2 and "regret[500]" in suite and "best_share[60]" in suite  # regret and best share
    assert "per scenario" in suite and "drift" in suite and "scenarios abrupt, drift" in suite


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real smoke distill run (about 15 s on CPU), shared by the tests that need a real report.json."""
    from distillctl import engine
    from distillctl.cli.distill_cmd import build_config

    out = tmp_path_factory.mktemp("report") / "run"
    cfg, _ = build_config("smoke", {}, ["eval.evaluators=[]"])
    engine.run(cfg, out)
    return out


def test_distill_writes_report_html(smoke_run: Path) -> None:
    page = (smoke_run / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert svg_count(page) >= 4


def test_report_command_rerenders_all_views(smoke_run: Path) -> None:
    for name in ("report.md", "report.html"):
        (smoke_run / name).unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["report", str(smoke_run)])
    assert result.exit_code == 0, result.output
    assert "Probe loss" in result.output and "report.html" in result.output
    assert "## Arms" in (smoke_run / "report.md").read_text(encoding="utf-8")
    assert svg_count((smoke_run / "report.html").read_text(encoding="utf-8")) >= 4


def test_report_command_picks_views(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps(synthetic_report(4)), encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--md"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.md").is_file() and not (tmp_path / "report.html").exists()
    assert "Arms" not in result.output  # no terminal view unless asked
    result = CliRunner().invoke(app, ["report", str(tmp_path / "report.json"), "--html", "--terminal"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").is_file() and "Arms" in result.output


@pytest.mark.parametrize("content, message", [
    (None, "holds no report.json"),
    ("{not json", "is not readable JSON"),
    ("[1, 2]", "is not a distillctl report"),
])
def test_report_command_bad_report_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "report.json").write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_report_command_missing_run_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no such run" in result.output and len(result.output.strip().splitlines()) == 1


def write_pages(out: Path) -> dict[str, Path]:
    """report.html, compare.html and simulate.html from the synthetic documents (also used for screenshots)."""
    out.mkdir(parents=True, exist_ok=True)
    write_reports(synthetic_report(), out)
    pages = {"report": out / "report.html", "compare": out / "compare.html", "simulate": out / "simulate.html"}
    pages["compare"].write_text(render_compare_html(synthetic_compare()), encoding="utf-8")
    pages["simulate"].write_text(render_simulate_html(synthetic_simulate()), encoding="utf-8")
    return pages


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium); "
                                             ".ci/run installs it for this test")
def test_pages_render_in_headless_chromium_without_network(tmp_path: Path) -> None:
    # --proxy-server points at a closed port: any fetch the page tried would fail, yet it must render whole.
    for name, page in write_pages(tmp_path).items():
        png = tmp_path / f"{name}.png"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--proxy-server=127.0.0.1:9", "--window-size=1200,2400", f"--screenshot={png}",
                        page.as_uri()], check=True, capture_output=True, timeout=120)
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 50_000, f"{name}: {len(data)} bytes, a blank page?"  # charts and tables, not a white page


def test_help_does_not_import_matplotlib() -> None:
    probe = ("import sys\nfrom distillctl.cli import app\n"
             "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
