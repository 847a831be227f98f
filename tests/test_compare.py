"""``distillctl compare``: policies x seeds, real runs on the smoke preset."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from distillctl.cli import app
from distillctl.cli.compare_cmd import parse_entries, steps_to_target, summarize

runner = CliRunner()


def test_compare_runs_every_policy_and_seed(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", "--preset", "smoke", "--policies", "optima,fixed-order@all", "--seeds", "0,1",
                              "--set", "eval.evaluators=['retrieval']", "--set", "eval.samples=100",
                              "--set", "eval.teacher=false", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "compare.json").read_text())
    rows = {r["label"]: r for r in doc["rows"]}
    assert set(rows) == {"optima", "fixed-order-all"}
    assert rows["optima"]["seeds"] == 2 and rows["fixed-order-all"]["arms"] == "all"
    assert rows["fixed-order-all"]["pulls"] == {"vision+text+multimodal": 6}
    assert sum(rows["optima"]["pulls"].values()) == 6
    for label in rows:
        for seed in (0, 1):
            assert (out / label / f"seed{seed}" / "student.safetensors").is_file()
    finals = [json.loads((out / "optima" / f"seed{s}" / "report.json").read_text())["final_probe"]["total"] for s in (0, 1)]
    assert rows["optima"]["final_probe"][0] == sum(finals) / 2
    assert "i2t_r1" in rows["optima"]["eval"]
    assert "| optima |" in (out / "compare.md").read_text()
    # a second compare into the same folder is refused
    res = runner.invoke(app, ["compare", "--preset", "smoke", "--policies", "optima", "--seeds", "0", "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_compare_validates_everything_before_running(tmp_path: Path) -> None:
    res = runner.invoke(app, ["compare", "--preset", "smoke", "--policies", "optima,optimal", "--out", str(tmp_path / "c")])
    assert res.exit_code == 1 and "unknown policy 'optimal'" in res.output
    assert not (tmp_path / "c").exists()
    res = runner.invoke(app, ["compare", "--preset", "smoke", "--seeds", "a,b", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--seeds" in res.output


def test_summary_math() -> None:
    assert parse_entries("optima, fixed-order@all,") == [("optima", "optima", None, {}), ("fixed-order-all", "fixed-order", "all", {})]
    assert parse_entries("optima[window=50,exploration=0.5]@combinations") == [
        ("optima[window=50,exploration=0.5]-combinations", "optima", "combinations", {"window": 50, "exploration": 0.5})]

    def rep(probes: list[float]) -> dict:
        return {"config": {"policy": {"name": "p", "arms": "single"}}, "arms": [{"arm": "a", "pulls": len(probes)}],
                "episodes": [{"step": 10 * (i + 1), "probe": {"total": p}} for i, p in enumerate(probes)],
                "final_probe": {"total": probes[-1]}, "eval": {"student": {"i2t_r1": probes[-1] / 10}}}

    fast, slow = [rep([5, 2, 1]), rep([3, 2, 1])], [rep([5, 4, 3]), rep([5, 4, 3])]
    assert steps_to_target(fast[0], 2.0) == 20 and steps_to_target(slow[0], 2.0) is None
    s = summarize({"fast": fast, "slow": slow}, None)
    assert s["target_probe_loss"] == 3.0  # the loosest mean final loss
    rows = {r["label"]: r for r in s["rows"]}
    assert rows["fast"]["steps_to_target"] == (15.0, 5 * 2**0.5) and rows["slow"]["steps_to_target"] == (30.0, 0.0)
    assert rows["fast"]["final_probe"] == (1.0, 0.0)


def test_simulate_command_runs_without_torch_and_ranks_optima_first() -> None:
    import subprocess
    import sys

    code = (
        "import sys, json; from typer.testing import CliRunner; from distillctl.cli import app; "
        "r = CliRunner().invoke(app, ['simulate', '--switch', '200:0.01,0.02,0.05', '--seeds', '4', '--json']); "
        "print(json.dumps({'code': r.exit_code, 'out': r.output, 'torch': 'torch' in sys.modules}))"
    )
    res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert res["code"] == 0 and res["torch"] is False
    rows = {r["policy"]: r for r in json.loads(res["out"])["rows"]}
    assert rows["optima"]["regret_mean"] < rows["uniform"]["regret_mean"] / 2
    assert rows["optima"]["best_fraction_mean"] > 0.6 > rows["fixed-order"]["best_fraction_mean"]


def test_simulate_bad_input() -> None:
    res = runner.invoke(app, ["simulate", "--switch", "soon:0.1,0.2,0.3"])
    assert res.exit_code == 2 and "EPISODE:MEANS" in res.output
    res = runner.invoke(app, ["simulate", "--means", "a,b"])
    assert res.exit_code == 2 and "--means takes comma-separated numbers" in res.output
    res = runner.invoke(app, ["simulate", "--switch", "100:0.1,0.2"])
    assert res.exit_code == 1 and "same number of arms" in res.output


def test_compare_policy_specs_set_options_and_write_html(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", "--preset", "smoke", "--policies", "optima[discount=0.9]@combinations",
                              "--seeds", "0", "--set", "eval.evaluators=[]", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "compare.json").read_text())
    (row,) = doc["rows"]
    assert row["arms"] == "combinations" and row["policy"] == "optima"
    report = json.loads((out / "optima-discount=0.9-combinations" / "seed0" / "report.json").read_text())
    assert report["config"]["policy"]["discount"] == 0.9
    assert len(row["curves"]) == 1 and len(row["curves"][0]) == len(report["episodes"]) + 1
    html = (out / "compare.html").read_text()
    assert "<svg" in html and "optima" in html
