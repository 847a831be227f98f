"""The example plugin against distillctl's conformance kit (``distillctl.testing``)."""

from __future__ import annotations

import pytest
from distillctl_example import DiscountedUCBPolicy, discounted_ucb

from distillctl import plugins, testing


def test_policy_follows_the_contract() -> None:
    testing.check_policy(discounted_ucb)  # select / update / posterior / JSON state / bit-exact resume / seeding
    testing.check_policy(discounted_ucb, discount=1.0, c=0.0)


def test_recent_rewards_weigh_more() -> None:
    policy = DiscountedUCBPolicy([("vision",), ("text",)], seed=0, discount=0.5, c=0.0)
    for _ in range(10):
        policy.update(0, 1.0)  # vision paid well, long ago...
    for _ in range(3):
        policy.update(1, 0.2)  # ...text pays a little, recently
        policy.update(0, 0.0)  # ...and vision stopped paying
    assert policy.select(16) == 1


def test_bad_options_are_errors() -> None:
    with pytest.raises(ValueError, match="discount"):
        discounted_ucb(arms=[("a",)], seed=0, discount=0.0)


def test_registered_through_the_hook() -> None:
    import distillctl_example

    loaded = plugins.load_plugins(include_entry_points=False, extra=(distillctl_example,))
    entry = loaded.registry("policy").get("discounted-ucb")
    assert entry.summary.startswith("Discounted UCB") and loaded.registry("policy").get("d-ucb") is entry
    policy = loaded.registry("policy").create("discounted-ucb", arms=[("vision",), ("text",)], seed=0, discount=0.9)
    assert policy.discount == 0.9
