"""Selection policies, arm sets and the synthetic bandit runner (pure Python, no models)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from distillctl.errors import ConfigError, DistillctlError, UnknownComponentError
from distillctl.plugins import load_plugins
from distillctl.policies import (
    DiscountedTSPolicy,
    FixedOrderPolicy,
    OptimaPolicy,
    SlidingWindowTSPolicy,
    SlidingWindowUCBPolicy,
    ThompsonPolicy,
    UniformPolicy,
    arm_name,
    build_arms,
    parse_policy_spec,
    split_policy_specs,
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
def _warmup(policy, n):
    picks = []
    for e in range(n):
        picks.append(policy.select(e))
        policy.update(picks[-1], 0.01 * (e + 1))
    return picks


def test_optima_warmup_is_one_pass_in_a_seeded_random_order():
    arms = build_arms(MODULES, "combinations")
    orders = {tuple(_warmup(OptimaPolicy(arms, seed=s), 7)) for s in range(6)}
    assert all(sorted(o) == list(range(7)) for o in orders)  # every arm exactly once
    assert len(orders) > 1  # the order differs across seeds ...
    assert _warmup(OptimaPolicy(arms, seed=5), 7) == _warmup(OptimaPolicy(arms, seed=5), 7)  # ... not per seed
    firsts = {_warmup(OptimaPolicy(SINGLE, seed=s), 1)[0] for s in range(20)}
    assert firsts == {0, 1, 2}  # no module always goes first


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


def test_optima_posterior_is_conjugate_and_windowed():
    policy = OptimaPolicy(SINGLE, seed=0, window=4, sigma=0.01, prior_mean=0.0, prior_std=0.1, exploration=1.0)
    for arm, reward in [(0, 0.05), (1, 0.02), (2, 0.01), (0, 0.07), (1, 0.04)]:
        policy.select(len(policy.history))
        policy.update(arm, reward)  # the warm-up order is random, so feed fixed arms regardless
    post = policy.posterior()

    def conjugate(rewards):  # Normal prior N(0, 0.1^2), noise 0.01: precision-weighted mean and variance
        precision = 1 / 0.1**2 + len(rewards) / 0.01**2
        return (sum(rewards) / 0.01**2) / precision, 1 / math.sqrt(precision)

    # window of 4 drops the first reward (arm 0, 0.05): arm 0 has [0.07], arm 1 [0.02, 0.04], arm 2 [0.01]
    for arm, rewards in enumerate([[0.07], [0.02, 0.04], [0.01]]):
        mean, std = conjugate(rewards)
        assert post[arm] == {"mean": pytest.approx(mean), "std": pytest.approx(std), "n": float(len(rewards))}
    policy.update(1, 0.03)
    policy.update(0, 0.06)  # window now [0.07, 0.04, 0.03, 0.06]: arm 2 left it -> back to the prior
    post = policy.posterior()
    assert post[2] == {"mean": 0.0, "std": pytest.approx(0.1), "n": 0.0}


def test_optima_estimates_within_arm_noise_not_the_gaps_between_arms():
    # arms far apart, each with tiny noise: pooling all rewards would call the gaps "noise"
    policy = OptimaPolicy(SINGLE, seed=0, prior_dof=0.0)
    rewards = {0: [0.10, 0.1002, 0.0998], 1: [0.05, 0.0502, 0.0498], 2: [0.01, 0.0102, 0.0098]}
    for i in range(3):
        for arm in range(3):
            policy.update(arm, rewards[arm][i])
    sigma = math.sqrt(policy._noise_and_prior()[0])
    assert sigma < 0.001  # the within-arm spread is 0.0002; the spread across arms ~0.04
    post = policy.posterior()
    assert post[0]["mean"] == pytest.approx(0.1, rel=0.01)  # shrinkage is as small as the evidence warrants


def test_optima_scale_free():
    # the same bandit at 1/100 the scale gives the same choices
    big = simulate("optima", [0.05, 0.02, 0.01], 200, seed=3, noise=0.01)
    def small_schedule(e):
        return [0.0005, 0.0002, 0.0001]
    small = simulate("optima", small_schedule, 200, seed=3, noise=0.0001)
    agree = sum(a == b for a, b in zip(big["sequence"], small["sequence"], strict=True))
    assert agree > 0.95 * 200, agree


def test_optima_defaults_and_bad_options():
    policy = OptimaPolicy(SINGLE, seed=0)
    assert policy.window is None and policy.discount == OptimaPolicy.DEFAULT_DISCOUNT
    assert policy.exploration == OptimaPolicy.DEFAULT_EXPLORATION
    windowed = OptimaPolicy(SINGLE, seed=0, window=30)
    assert windowed.window == 30 and windowed.discount is None  # a window replaces discounting
    with pytest.raises(ConfigError, match="policy.discount"):
        OptimaPolicy(SINGLE, seed=0, discount=1.5)
    with pytest.raises(ConfigError, match="policy.exploration"):
        OptimaPolicy(SINGLE, seed=0, exploration=0)
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
REFERENCES = ["ts", "sw-ts", "discounted-ts", "sw-ucb"]


@pytest.mark.parametrize("name", ["optima", "uniform", "fixed-order", *REFERENCES])
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
        lambda: OptimaPolicy(SINGLE, seed=3),
        lambda: ThompsonPolicy(SINGLE, seed=3),
        lambda: SlidingWindowTSPolicy(SINGLE, seed=3, window=10),
        lambda: DiscountedTSPolicy(SINGLE, seed=3),
        lambda: SlidingWindowUCBPolicy(SINGLE, seed=3, window=10),
    ],
    ids=["optima-window", "uniform", "fixed-order", "optima", "ts", "sw-ts", "discounted-ts", "sw-ucb"],
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
    assert {"optima", "uniform", "fixed-order", *REFERENCES} <= set(reg.names())
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


# --------------------------------------------------------------------------- references
@pytest.mark.parametrize("name", REFERENCES)
def test_reference_policies_conform(name):
    reg = load_plugins(include_entry_points=False).registry("policy")
    arms = build_arms(MODULES, "combinations")
    policy = reg.create(name, arms=arms, seed=1)
    first = [policy.select(e) for e in range(1)]
    picks = []
    for e in range(60):
        arm = policy.select(e)
        assert isinstance(arm, int) and 0 <= arm < len(arms)
        picks.append(arm)
        policy.update(arm, 0.05 if arm == 3 else 0.01 + 0.001 * arm)
    assert sorted(picks[:7]) == list(range(7))  # one pass over every arm first ...
    assert picks[:1] == first
    assert picks[30:].count(3) > 15  # ... then mostly the best arm
    post = policy.posterior()
    assert len(post) == 7 and all(set(p) == {"mean", "std", "n"} for p in post)
    json.dumps(policy.state_dict())
    options = reg.get(name).options()
    assert options is not None and list(options)[:2] == ["arms", "seed"]


def test_reference_defaults_are_the_textbook_ones():
    assert SlidingWindowTSPolicy(SINGLE).options() == {"window": 50}
    assert DiscountedTSPolicy(SINGLE).options() == {"discount": 0.95}
    assert SlidingWindowUCBPolicy(SINGLE).options() == {"window": 50, "xi": 0.6}


@pytest.mark.parametrize("cls", [SlidingWindowTSPolicy, SlidingWindowUCBPolicy])
def test_sliding_window_policies_replay_arms_that_left_the_window(cls):
    policy = cls(SINGLE, seed=0, window=5)
    for e, (arm, reward) in enumerate([(0, 0.05), (1, 0.01), (2, 0.01)] + [(0, 0.05)] * 4):
        policy.select(e)
        policy.update(arm, reward)
    # the window [0.01 (arm 2), 0.05 x 4 (arm 0)] no longer holds arm 1: it is played next
    assert policy.posterior()[1]["n"] == 0.0
    assert policy.select(7) == 1


def test_sw_ucb_index_uses_the_observed_reward_range():
    policy = SlidingWindowUCBPolicy(SINGLE, seed=0, window=10)
    for arm, reward in [(0, 0.05), (1, 0.03), (2, 0.01), (0, 0.07)]:
        policy.update(arm, reward)
    post = policy.posterior()
    bound = 0.07 - 0.01
    assert post[0]["std"] == pytest.approx(bound * math.sqrt(0.6 * math.log(4) / 2))
    assert post[1]["std"] == pytest.approx(bound * math.sqrt(0.6 * math.log(4) / 1))


# --------------------------------------------------------------------------- policy specs
def test_parse_policy_spec():
    assert parse_policy_spec("optima") == ("optima", {})
    assert parse_policy_spec(" optima[window=50, sigma=0.01] ") == ("optima", {"window": 50, "sigma": 0.01})
    assert parse_policy_spec("optima[warmup=false,discount=0.99]") == ("optima", {"warmup": False, "discount": 0.99})
    assert parse_policy_spec('fixed-order[order=["text", "vision+text"]]') == (
        "fixed-order", {"order": ["text", "vision+text"]})
    assert parse_policy_spec("fixed-order[order=[text,vision+text]]") == (
        "fixed-order", {"order": ["text", "vision+text"]})
    assert parse_policy_spec("my:variant[x=1]") == ("my:variant", {"x": 1})
    assert parse_policy_spec("optima[]") == ("optima", {})
    assert split_policy_specs("optima[window=50,sigma=0.01], uniform,,sw-ts") == [
        "optima[window=50,sigma=0.01]", "uniform", "sw-ts"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("optima[window=50", "must end with ']'"),
        ("[window=5]", "missing the policy name"),
        ("optima[window]", "expected key=value"),
        ("optima[window=1,window=2]", "given twice"),
        ("optima[1x=2]", "not an option name"),
        ("optima[sigma=(]", "cannot read the value"),
        ("optima]", "']' without '['"),
    ],
)
def test_parse_policy_spec_errors_are_one_line(spec, message):
    from distillctl.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(message)) as info:
        parse_policy_spec(spec)
    assert "\n" not in str(info.value)
