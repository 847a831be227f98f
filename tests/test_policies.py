"""Selection policies, arm sets and the synthetic bandit runner (pure Python, no models)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from distillctl.errors import ConfigError, DistillctlError, UnknownComponentError
from distillctl.plugins import load_plugins
from distillctl.policies import (
    FixedOrderPolicy,
    OptimaPolicy,
    UniformPolicy,
    arm_name,
    build_arms,
)
from distillctl.simulate import simulate

MODULES = ["vision", "text", "multimodal"]
SINGLE = build_arms(MODULES, "single")


def first_switch(sequence: list[int], arm: int, start: int, k: int = 4, m: int = 5) -> int | None:
    """First episode >= start from which ``arm`` is played in at least k of the next m pulls."""
    for t in range(start, len(sequence) - m + 1):
        if sum(1 for a in sequence[t : t + m] if a == arm) >= k:
            return t
    return None


# --------------------------------------------------------------------------- arms
def test_build_arms_sizes_and_order():
    assert build_arms(MODULES, "single") == [("vision",), ("text",), ("multimodal",)]
    combos = build_arms(MODULES, "combinations")
    assert len(combos) == 7
    assert combos[:3] == [("vision",), ("text",), ("multimodal",)]
    assert combos[3:6] == [("vision", "text"), ("vision", "multimodal"), ("text", "multimodal")]
    assert combos[6] == ("vision", "text", "multimodal")
    assert build_arms(MODULES, "all") == [("vision", "text", "multimodal")]
    assert arm_name(combos[3]) == "vision+text"


def test_build_arms_unknown_mode_names_valid_modes():
    with pytest.raises(DistillctlError) as info:
        build_arms(MODULES, "pairs")
    msg = str(info.value)
    assert "'pairs'" in msg and "single" in msg and "combinations" in msg and "all" in msg
    assert "\n" not in msg


# --------------------------------------------------------------------------- baselines
def test_fixed_order_with_all_arm_plays_the_one_arm():
    policy = FixedOrderPolicy(build_arms(MODULES, "all"), seed=0)
    picks = []
    for e in range(10):
        picks.append(policy.select(e))
        policy.update(picks[-1], 0.01)
    assert picks == [0] * 10


def test_fixed_order_cycles_in_given_order():
    arms = build_arms(MODULES, "combinations")
    policy = FixedOrderPolicy(arms, seed=0, order=["text", "vision+multimodal", "vision"])
    names = [arm_name(arms[policy.select(e)]) for e in range(7)]
    assert names == ["text", "vision+multimodal", "vision", "text", "vision+multimodal", "vision", "text"]
    default = FixedOrderPolicy(SINGLE, seed=0)
    assert [default.select(e) for e in range(6)] == [0, 1, 2, 0, 1, 2]


def test_fixed_order_unknown_arm_lists_valid_arms():
    with pytest.raises(ConfigError) as info:
        FixedOrderPolicy(SINGLE, seed=0, order=["vision", "vison+text"])
    msg = str(info.value)
    assert "'vison+text'" in msg and "vision, text, multimodal" in msg


def test_uniform_frequencies_are_uniform():
    policy = UniformPolicy(SINGLE, seed=123)
    n = 6000
    counts = [0, 0, 0]
    for e in range(n):
        arm = policy.select(e)
        counts[arm] += 1
        policy.update(arm, 0.0)
    expected = n / 3
    sd = math.sqrt(n * (1 / 3) * (2 / 3))
    assert all(abs(c - expected) < 4 * sd for c in counts), counts
    assert policy.pulls() == counts


# --------------------------------------------------------------------------- OPTIMA
def test_optima_warmup_is_one_round_robin_pass():
    policy = OptimaPolicy(build_arms(MODULES, "combinations"), seed=5)
    picks = []
    for e in range(7):
        picks.append(policy.select(e))
        policy.update(picks[-1], 0.01 * (e + 1))
    assert picks == list(range(7))


def test_optima_pulls_the_best_arm_most():
    result = simulate("optima", [0.05, 0.02, 0.01], 300, seed=0, noise=0.01, arms=SINGLE)
    pulls = result["pulls"]
    assert pulls["vision"] > 0.7 * 300, pulls
    assert pulls["vision"] > 5 * max(pulls["text"], pulls["multimodal"]), pulls
    uniform = simulate("uniform", [0.05, 0.02, 0.01], 300, seed=0, noise=0.01, arms=SINGLE)
    assert result["regret"] < uniform["regret"] / 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_optima_finds_a_neglected_arm_that_becomes_best_within_a_window(seed):
    window, changepoint = 10, 200
    schedule = [(0, [0.05, 0.02, 0.01]), (changepoint, [0.01, 0.02, 0.06])]
    result = simulate("optima", schedule, 300, seed=seed, noise=0.01, options={"window": window})
    before = result["sequence"][changepoint - 100 : changepoint]
    assert before.count(0) > 0.7 * len(before)  # arm 0 was clearly preferred, arm 2 neglected
    t = first_switch(result["sequence"], arm=2, start=changepoint)
    assert t is not None and t <= changepoint + window, (t, result["sequence"][changepoint : changepoint + 30])
    after = result["sequence"][changepoint + window + 10 :]
    assert after.count(2) > 0.7 * len(after)


def test_optima_follows_a_best_arm_that_decays():
    # arm 0 starts best but its reward shrinks as "its module converges" (the OPTIMA motivation)
    def schedule(e: int) -> list[float]:
        return [0.1 * 0.98**e, 0.03, 0.02]

    result = simulate("optima", schedule, 200, seed=0, noise=0.005)
    seq = result["sequence"]
    assert seq[3:40].count(0) > 0.7 * 37  # early: arm 0 (0.1 .. 0.046 > 0.03)
    assert seq[120:].count(1) > 0.7 * 80  # late: arm 1 (0.03 > 0.1 * 0.98**120 = 0.009)


def test_optima_posterior_and_options():
    policy = OptimaPolicy(SINGLE, seed=0, window=4, sigma=0.01)
    for e, (arm, reward) in enumerate([(0, 0.05), (1, 0.02), (2, 0.01), (0, 0.07), (1, 0.04)]):
        assert policy.select(e) == arm or e >= 3
        policy.update(arm, reward)
    post = policy.posterior()
    # window of 4 drops the first reward (arm 0, 0.05): arm 0 has [0.07], arm 1 [0.02, 0.04], arm 2 [0.01]
    assert post[0] == {"mean": pytest.approx(0.07), "std": pytest.approx(0.01 / math.sqrt(2)), "n": 1.0}
    assert post[1]["mean"] == pytest.approx(0.03) and post[1]["n"] == 2.0
    assert post[1]["std"] == pytest.approx(0.01 / math.sqrt(3))
    policy.update(1, 0.03)
    policy.update(0, 0.06)  # window now [0.07, 0.04, 0.03, 0.06]: arm 2 left it -> optimistic prior
    post = policy.posterior()
    assert post[2]["n"] == 0.0
    assert post[2]["mean"] > max(post[0]["mean"], post[1]["mean"])


def test_optima_default_window_and_bad_options():
    assert OptimaPolicy(SINGLE, seed=0).window == 10
    assert OptimaPolicy(build_arms(MODULES, "combinations"), seed=0).window == 21
    with pytest.raises(ConfigError, match="policy.window"):
        OptimaPolicy(SINGLE, seed=0, window=0)
    with pytest.raises(ConfigError, match="policy.sigma"):
        OptimaPolicy(SINGLE, seed=0, sigma=-1.0)
    with pytest.raises(ConfigError, match="policy.warmup"):
        OptimaPolicy(SINGLE, seed=0, warmup="yes")  # type: ignore[arg-type]


def test_optima_identical_rewards_keep_exploring():
    # sigma is floored, so a deterministic reward stream cannot freeze the posterior on one arm
    policy = OptimaPolicy(SINGLE, seed=0)
    picks = []
    for e in range(60):
        picks.append(policy.select(e))
        policy.update(picks[-1], 0.02)
    assert len(set(picks[10:])) == 3


# --------------------------------------------------------------------------- determinism, state
@pytest.mark.parametrize("name", ["optima", "uniform", "fixed-order"])
def test_same_seed_same_sequence(name):
    a = simulate(name, [0.03, 0.02, 0.025], 120, seed=7, noise=0.02)
    b = simulate(name, [0.03, 0.02, 0.025], 120, seed=7, noise=0.02)
    assert a["sequence"] == b["sequence"] and a["rewards"] == b["rewards"]
    if name != "fixed-order":
        c = simulate(name, [0.03, 0.02, 0.025], 120, seed=8, noise=0.02)
        assert c["sequence"] != a["sequence"]


def _run(policy, rewards, start, stop):
    picks = []
    for e in range(start, stop):
        arm = policy.select(e)
        picks.append(arm)
        policy.update(arm, rewards[e][arm])
    return picks


@pytest.mark.parametrize(
    "make",
    [
        lambda: OptimaPolicy(SINGLE, seed=3, window=6),
        lambda: UniformPolicy(SINGLE, seed=3),
        lambda: FixedOrderPolicy(SINGLE, seed=3, order=["text", "vision"]),
    ],
    ids=["optima", "uniform", "fixed-order"],
)
def test_state_dict_round_trip_resumes_identically(make):
    import random

    noise = random.Random(0)
    rewards = [[0.04 + noise.gauss(0, 0.01), 0.03 + noise.gauss(0, 0.01), 0.02 + noise.gauss(0, 0.01)] for _ in range(80)]
    uninterrupted = _run(make(), rewards, 0, 80)

    first = make()
    head = _run(first, rewards, 0, 37)
    state = json.loads(json.dumps(first.state_dict()))  # through JSON, as a checkpoint would
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.posterior() == first.posterior()
    tail = _run(resumed, rewards, 37, 80)
    assert head + tail == uninterrupted
    assert resumed.state_dict() == json.loads(json.dumps(_finished(make, rewards).state_dict()))


def _finished(make, rewards):
    policy = make()
    _run(policy, rewards, 0, 80)
    return policy


def test_load_state_dict_rejects_other_arms_and_policies():
    state = OptimaPolicy(SINGLE, seed=0).state_dict()
    with pytest.raises(DistillctlError, match="saved for arms"):
        OptimaPolicy(build_arms(MODULES, "all"), seed=0).load_state_dict(state)
    with pytest.raises(DistillctlError, match="saved by policy 'optima'"):
        UniformPolicy(SINGLE, seed=0).load_state_dict(state)
    with pytest.raises(DistillctlError, match="malformed"):
        OptimaPolicy(SINGLE, seed=0).load_state_dict({"policy": "optima"})


def test_update_rejects_bad_arm_and_non_finite_reward():
    policy = UniformPolicy(SINGLE, seed=0)
    with pytest.raises(DistillctlError, match="out of range"):
        policy.update(3, 0.1)
    with pytest.raises(DistillctlError, match="not finite"):
        policy.update(0, float("nan"))


# --------------------------------------------------------------------------- plugins
def test_policies_register_through_the_plugin_hook():
    reg = load_plugins(include_entry_points=False).registry("policy")
    assert {"optima", "uniform", "fixed-order"} <= set(reg.names())
    policy = reg.create("optima", arms=SINGLE, seed=0)
    assert isinstance(policy, OptimaPolicy) and policy.arms == SINGLE
    assert isinstance(reg.create("round-robin", arms=SINGLE, seed=0), FixedOrderPolicy)
    entry = reg.get("optima")
    assert entry.summary.startswith("OPTIMA")
    options = entry.options()
    assert options is not None and {"window", "sigma", "prior_mean", "prior_std", "warmup"} <= set(options)
    assert reg.get("fixed-order").options() == {"arms": options["arms"], "seed": 0, "order": None}
    with pytest.raises(UnknownComponentError, match="optima"):
        reg.get("optimaa")


def test_policy_modules_do_not_import_torch():
    code = (
        "import sys, distillctl.default_plugins.policies, distillctl.policies, distillctl.simulate\n"
        "from distillctl.simulate import simulate\n"
        "simulate(distillctl.policies.OptimaPolicy, [0.1, 0.2], 20)\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- simulate
def test_simulate_reports_pulls_regret_and_sequence():
    result = simulate("fixed-order", [(0, [0.1, 0.0]), (4, [0.0, 0.1])], 8, seed=0, noise=0.0)
    assert result["sequence"] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert result["best"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert result["pulls"] == {"arm0": 4, "arm1": 4}
    assert result["rewards"] == [0.1, 0.0, 0.1, 0.0, 0.0, 0.1, 0.0, 0.1]
    assert result["regret"] == pytest.approx(0.4)
    assert result["regret_curve"][-1] == pytest.approx(0.4) and len(result["regret_curve"]) == 8
    assert result["best_fraction"] == 0.5
    json.dumps(result)


def test_simulate_bad_input_is_one_clear_error():
    with pytest.raises(ConfigError, match="same number of arms"):
        simulate("uniform", [(0, [0.1, 0.2]), (5, [0.1])], 10)
    with pytest.raises(ConfigError, match="episodes"):
        simulate("uniform", [0.1, 0.2], 0)
    with pytest.raises(ConfigError, match="2 arms but the schedule has 3"):
        simulate("uniform", [0.1, 0.2, 0.3], 10, arms=[("a",), ("b",)])
