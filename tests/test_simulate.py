"""The simulator suite (``distillctl.simulate.suite`` / ``run_suite``) and ``distillctl simulate``.

The acceptance test of issue 10 lives here: on the suite, the default ``optima`` has the lowest
mean normalised regret of every registered policy at 60 and at 500 episodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from distillctl.cli import app
from distillctl.errors import DistillctlError
from distillctl.plugins import registry
from distillctl.policies import BasePolicy
from distillctl.simulate import FAMILIES, Scenario, resolve_policy, run_suite, simulate, suite

runner = CliRunner()


def _registered() -> list[str]:
    return [e.name for e in registry("policy") if not e.is_prefix]


# --------------------------------------------------------------------------- the suite
def test_suite_covers_the_families_arms_and_noise_levels():
    scenarios = suite()
    assert len(scenarios) == 24
    assert {s.family for s in scenarios} == set(FAMILIES) == {"decay", "switch", "drift", "decay-together"}
    assert {s.arms for s in scenarios} == {3, 7}
    assert {s.noise for s in scenarios} == {"low", "mid", "high"}
    assert len({s.name for s in scenarios}) == 24


@pytest.mark.parametrize("family", ["decay", "switch", "drift"])
def test_non_stationary_families_change_the_best_arm(family):
    changed = 0
    for seed in range(10):
        means, _ = Scenario(family, 3, "mid").instance(500, seed)
        best = {max(range(3), key=lambda i, row=row: row[i]) for row in means}
        changed += len(best) > 1
    assert changed >= 5 if family != "switch" else changed == 10


def test_decay_together_shrinks_every_arm_and_its_noise():
    means, rewards = Scenario("decay-together", 3, "mid").instance(500, 0)
    assert all(late < early / 5 for early, late in zip(means[0], means[-1], strict=True))
    best = {max(range(3), key=lambda i, row=row: row[i]) for row in means}
    assert len(best) == 1  # the ranking stays, only the scale falls
    early_noise = max(abs(r - m) for r, m in zip(rewards[0] + rewards[1], means[0] + means[1], strict=True))
    late_noise = max(abs(r - m) for r, m in zip(rewards[-1] + rewards[-2], means[-1] + means[-2], strict=True))
    assert late_noise < early_noise


def test_instances_are_paired_and_reproducible():
    sc = Scenario("switch", 7, "high")
    assert sc.instance(60, 3) == sc.instance(60, 3)
    assert sc.instance(60, 3) != sc.instance(60, 4)


def test_run_suite_table_shape_and_normalisation():
    scenarios = suite(arms=(3,), noises=("mid",))
    doc = run_suite(["uniform", "fixed-order", "optima"], horizons=(30, 80), seeds=3, scenarios=scenarios)
    assert doc["horizons"] == [30, 80] and doc["seeds"] == 3 and len(doc["scenarios"]) == 4
    rows = {r["policy"]: r for r in doc["rows"]}
    for h in (30, 80):
        assert 0.7 < rows["uniform"]["regret"][h] < 1.3  # normalised by uniform play's expected regret
        assert rows["optima"]["regret"][h] < rows["uniform"]["regret"][h]
        assert sum(r["rank"][h] for r in doc["rows"]) == pytest.approx(6.0)  # ranks 1+2+3 on average
        assert all(0.0 <= r["best_share"][h] <= 1.0 for r in doc["rows"])
    assert len(doc["per_scenario"]) == 8
    json.dumps(doc)


def test_paired_seeds_same_pull_same_reward():
    # two policies that play the same arm in the same episode get the same reward
    a = simulate("fixed-order", [0.05, 0.02, 0.01], 30, seed=5, noise=0.01)
    b = simulate("fixed-order[order=[arm0,arm1,arm2]]", [0.05, 0.02, 0.01], 30, seed=5, noise=0.01)
    c = simulate("uniform", [0.05, 0.02, 0.01], 30, seed=5, noise=0.01)
    assert a["rewards"] == b["rewards"]
    same = [i for i in range(30) if a["sequence"][i] == c["sequence"][i]]
    assert same and all(a["rewards"][i] == c["rewards"][i] for i in same)


# --------------------------------------------------------------------------- acceptance (issue 10)
def _acceptance(seeds: int) -> dict[str, Any]:
    doc = run_suite(_registered(), horizons=(60, 500), seeds=seeds)
    rows = {r["policy"]: r for r in doc["rows"]}
    for h in (60, 500):
        best = min(rows, key=lambda p: rows[p]["regret"][h])
        assert best == "optima", {p: round(r["regret"][h], 3) for p, r in rows.items()}
    return rows


@pytest.mark.slow
def test_default_optima_has_the_lowest_mean_regret_on_the_suite():
    """The full suite (24 scenarios x 20 paired seeds x 60 and 500 episodes, every registered policy)."""
    rows = _acceptance(20)
    for h in (60, 500):  # with a margin, not by a hair
        others = min(r["regret"][h] for p, r in rows.items() if p != "optima")
        assert rows["optima"]["regret"][h] < 0.95 * others


def test_default_optima_has_the_lowest_mean_regret_on_the_suite_quick():
    """The same check on 4 paired seeds (a few seconds), run by default."""
    _acceptance(4)


# --------------------------------------------------------------------------- names and specs
def test_simulate_resolves_aliases_specs_and_prefix_entries(plugin, use_plugins):
    seen: list[str] = []

    def prefixed(*, arms: Any, seed: int, variant: str, bias: int = 0) -> BasePolicy:
        seen.append(variant)
        from distillctl.policies import FixedOrderPolicy

        return FixedOrderPolicy(arms, seed, order=[f"arm{(bias + int(variant)) % len(arms)}"])

    def register_policies(register: Any) -> None:
        register("fixed:", prefixed, summary="Always one arm.")

    use_plugins(plugin("prefixed", register_policies=register_policies))
    result = simulate("fixed:2", [0.01, 0.02, 0.05], 10, noise=0.0)
    assert result["pulls"] == {"arm0": 0, "arm1": 0, "arm2": 10} and "2" in seen
    assert simulate("fixed:1[bias=1]", [0.01, 0.02, 0.05], 5, noise=0.0)["pulls"]["arm2"] == 5
    assert simulate("random", [0.01, 0.02], 5)["sequence"] == simulate("uniform", [0.01, 0.02], 5)["sequence"]
    doc = run_suite(["fixed:2", "round-robin", "optima[window=20]"], horizons=(20,), seeds=1,
                    scenarios=suite(arms=(3,), noises=("low",)))
    assert [r["policy"] for r in doc["rows"]]
    res = runner.invoke(app, ["simulate", "--policies", "fixed:1,d-ts,optima[discount=0.9]", "--seeds", "1",
                              "--episodes", "20"])
    assert res.exit_code == 0, res.output
    assert "fixed:1" in res.output and "optima[discount=0.9]" in res.output


def test_resolve_policy_bad_names_and_options_are_one_line():
    with pytest.raises(DistillctlError, match="Did you mean 'optima'") as info:
        resolve_policy("optimaa")
    with pytest.raises(DistillctlError, match="unknown option 'windw'") as info:
        resolve_policy("optima[windw=3]")
    assert "\n" not in str(info.value)
    with pytest.raises(DistillctlError, match="policy.window") as info:
        resolve_policy("sw-ts[window=0]")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- CLI
def test_simulate_suite_cli_json_and_html(tmp_path):
    page = tmp_path / "sim.html"
    res = runner.invoke(app, ["simulate", "--suite", "--policies", "optima,sw-ts,uniform", "--seeds", "2",
                              "--horizons", "30", "--json", "--html", str(page)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [set(r) >= {"policy", "regret", "rank", "best_share"} for r in doc["rows"]] == [True] * 3
    assert doc["horizons"] == [30] and doc["seeds"] == 2 and len(doc["scenarios"]) == 24
    assert page.read_text().startswith("<!") and "sw-ts" in page.read_text()
    table = runner.invoke(app, ["simulate", "--suite", "--policies", "optima,uniform", "--seeds", "1",
                                "--horizons", "20,40"])
    assert table.exit_code == 0, table.output
    for head in ("regret 20", "regret 40", "rank 20", "best 40", "optima", "uniform"):
        assert head in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "optima[window=5"], "must end with ']'"),
        (["--policies", "optima[windw=5]"], "unknown option 'windw'"),
        (["--policies", "optima,optima"], "twice"),
        (["--suite", "--horizons", "60,x"], "--horizons"),
        (["--suite", "--horizons", "0"], "--horizons"),
        (["--policies", "nosuch"], "unknown policy 'nosuch'"),
    ],
)
def test_simulate_bad_input_is_one_line(args, message):
    res = runner.invoke(app, ["simulate", *args])
    assert res.exit_code in (1, 2)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.output


def test_simulate_suite_does_not_import_torch():
    code = (
        "import sys, json; from typer.testing import CliRunner; from distillctl.cli import app; "
        "r = CliRunner().invoke(app, ['simulate', '--suite', '--seeds', '1', '--horizons', '20', '--json']); "
        "print(json.dumps({'code': r.exit_code, 'torch': 'torch' in sys.modules, 'numpy': 'numpy' in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res == {"code": 0, "torch": False, "numpy": False}
