"""Registry[T]: register/get/resolve/create, duplicates and clashes, unknown names, aliases, prefix entries,
plugin errors, option types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytest

from distillctl.errors import (
    ComponentClashError,
    DuplicateComponentError,
    PluginError,
    UnknownComponentError,
    WeightsError,
)
from distillctl.registry import Provenance, Registry, call_plugin, did_you_mean, plugin_errors

ALPHA = Provenance("alpha", "distillctl-alpha", "1.0")
BETA = Provenance("beta", "distillctl-beta", "2.3")


def make_uniform(*, arms: list, seed: int, temperature: float = 1.0) -> str:
    """Pick any arm.

    More text that is not the summary.
    """
    return f"uniform t={temperature}"


def make_open_clip(*, variant: str, device: str = "cpu") -> str:
    return f"open_clip {variant} on {device}"


def test_register_get_and_create() -> None:
    reg: Registry[str] = Registry("policy")
    entry = reg.register("uniform", make_uniform, provenance=ALPHA)
    assert reg.get("uniform") is entry
    assert entry.summary == "Pick any arm."  # first docstring line by default
    assert entry.provenance == ALPHA and str(ALPHA) == "distillctl-alpha 1.0"
    assert reg.create("uniform", arms=[], seed=0, temperature=0.5) == "uniform t=0.5"
    assert reg.names() == ["uniform"] and len(reg) == 1 and "uniform" in reg
    assert [e.name for e in reg] == ["uniform"]


def test_explicit_summary_wins() -> None:
    reg: Registry[str] = Registry("policy")
    assert reg.register("u", make_uniform, summary="custom").summary == "custom"


def test_duplicate_names_both_plugins() -> None:
    reg: Registry[str] = Registry("policy")
    reg.register("uniform", make_uniform, provenance=ALPHA)
    with pytest.raises(DuplicateComponentError) as info:
        reg.register("uniform", make_uniform, provenance=BETA)
    msg = str(info.value)
    assert "duplicate policy name 'uniform'" in msg
    assert "alpha (distillctl-alpha 1.0)" in msg and "beta (distillctl-beta 2.3)" in msg
    assert "DISTILLCTL_DISABLE_PLUGINS" in msg
    assert "\n" not in msg
    assert reg.get("uniform").provenance == ALPHA  # never overwritten silently


def test_alias_clashing_with_a_name_is_a_duplicate() -> None:
    reg: Registry[str] = Registry("policy")
    reg.register("uniform", make_uniform, provenance=ALPHA)
    with pytest.raises(DuplicateComponentError, match="'uniform'.*alpha.*beta"):
        reg.register("random", make_uniform, aliases=("uniform",), provenance=BETA)
    assert "random" not in reg


def test_unknown_lists_valid_names_and_suggests() -> None:
    reg: Registry[str] = Registry("policy")
    for name in ("optima", "uniform", "fixed-order"):
        reg.register(name, make_uniform)
    with pytest.raises(UnknownComponentError) as info:
        reg.get("optma")
    msg = str(info.value)
    assert "unknown policy 'optma'" in msg
    assert "Did you mean 'optima'?" in msg
    assert "Valid policy names: fixed-order, optima, uniform." in msg


def test_unknown_without_close_match_has_no_suggestion() -> None:
    reg: Registry[str] = Registry("teacher")
    reg.register("coca-base", make_uniform)
    with pytest.raises(UnknownComponentError) as info:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "coca-base" in str(info.value)


def test_unknown_in_empty_registry() -> None:
    with pytest.raises(UnknownComponentError, match=r"\(none registered\)"):
        Registry("evaluator").get("retrieval")


def test_aliases_resolve_to_the_entry() -> None:
    reg: Registry[str] = Registry("policy")
    entry = reg.register("uniform", make_uniform, aliases=("random", "rand"))
    assert reg.get("random") is entry and reg.get("rand") is entry
    assert "rand" in reg
    assert reg.names() == ["uniform"]  # aliases are not names
    assert reg.create("random", arms=[], seed=0) == "uniform t=1.0"
    with pytest.raises(UnknownComponentError, match="Did you mean 'random'"):
        reg.get("randm")  # aliases are suggested too


def test_prefix_entry_passes_variant() -> None:
    reg: Registry[str] = Registry("teacher")
    entry = reg.register("open-clip:", make_open_clip)
    assert entry.is_prefix
    assert reg.resolve("open-clip:coca_ViT-B-32") == (entry, "coca_ViT-B-32")
    assert reg.create("open-clip:coca_ViT-B-32", device="cuda") == "open_clip coca_ViT-B-32 on cuda"
    assert "open-clip:anything" in reg
    with pytest.raises(UnknownComponentError):
        reg.get("other:coca")  # only a registered prefix answers


def test_options_introspects_factory_keywords() -> None:
    reg: Registry[str] = Registry("policy")
    entry = reg.register("uniform", make_uniform)
    opts = entry.options()
    assert opts is not None and set(opts) == {"arms", "seed", "temperature"}
    assert opts["temperature"] == 1.0

    def takes_anything(**kwargs: object) -> str:
        return "x"

    assert reg.register("any", takes_anything).options() is None  # **kwargs: options unchecked


def test_empty_name_rejected() -> None:
    with pytest.raises(DuplicateComponentError, match="non-empty string"):
        Registry("policy").register("", make_uniform)


# ----------------------------------------------------------------- did-you-mean, listing
def test_did_you_mean_only_close_names() -> None:
    names = ["coca-base-optima", "coca-large-optima", "quickstart", "smoke"]
    assert did_you_mean("smoek", names) == " Did you mean 'smoke'?"
    assert did_you_mean("smok", names) == " Did you mean 'smoke'?"
    assert did_you_mean("quikstart", names) == " Did you mean 'quickstart'?"
    assert did_you_mean("nosuch", names) == ""  # the nearest name is still noise (ratio < 0.6)
    assert did_you_mean("optma", ["optima", "uniform"]) == " Did you mean 'optima'?"
    assert did_you_mean("x", []) == ""


def test_unknown_name_lists_aliases_it_may_suggest() -> None:
    reg: Registry[str] = Registry("policy")
    reg.register("uniform", make_uniform, aliases=("random",))
    reg.register("fixed-order", make_uniform, aliases=("round-robin", "rr"))
    reg.register("optima", make_uniform)
    with pytest.raises(UnknownComponentError) as info:
        reg.get("randon")
    assert str(info.value) == (
        "unknown policy 'randon'. Did you mean 'random'? "
        "Valid policy names: fixed-order (aliases round-robin, rr), optima, uniform (alias random)."
    )
    with pytest.raises(UnknownComponentError) as info:
        reg.get("nosuch")
    assert "Did you mean" not in str(info.value)


# ----------------------------------------------------------------- clashes (recorded)
def test_recorded_clash_keeps_both_and_refuses_only_that_name() -> None:
    reg: Registry[str] = Registry("policy")
    a = reg.register("greedy", make_uniform, provenance=ALPHA, on_clash="record")
    b = reg.register("greedy", make_uniform, provenance=BETA, on_clash="record")
    reg.register("optima", make_uniform, provenance=BETA, on_clash="record")
    assert [e for e in reg if e.name == "greedy"] == [a, b] and len(reg) == 3 and reg.names() == ["greedy", "optima"]
    assert "greedy" in reg  # registered (twice)
    assert reg.get("optima").provenance == BETA
    [clash] = reg.clashes()
    assert clash.names == ("greedy",) and clash.plugins() == [ALPHA, BETA]
    with pytest.raises(ComponentClashError) as info:
        reg.create("greedy", arms=[], seed=0)
    assert str(info.value) == (
        "cannot use policy 'greedy': duplicate policy name 'greedy': registered by alpha (distillctl-alpha 1.0) and by "
        "beta (distillctl-beta 2.3). Set DISTILLCTL_DISABLE_PLUGINS=beta to keep alpha's, "
        "or DISTILLCTL_DISABLE_PLUGINS=alpha to keep beta's."
    )
    assert isinstance(info.value, DuplicateComponentError)


# ----------------------------------------------------------------- plugin errors
MY_DIST = Provenance("mine", "my-dist", "1.2.0")


def make_broken(*, width: int = 64) -> str:
    raise ValueError("bad\nwidth")


class Chooser:
    def select(self) -> str:
        raise KeyError("x")

    def refuse(self) -> str:
        raise WeightsError("no weights here.")


def test_factory_exception_becomes_one_plugin_error_line() -> None:
    reg: Registry[str] = Registry("teacher")
    reg.register("foo", make_broken, aliases=("f",), provenance=MY_DIST)
    with pytest.raises(PluginError) as info:
        reg.create("f", width=3)
    assert str(info.value) == (
        "teacher 'f' from plugin my-dist 1.2.0 failed: ValueError: bad width (DISTILLCTL_DEBUG=1 shows the traceback.)"
    )
    assert isinstance(info.value.__cause__, ValueError)  # raise ... from: the traceback is kept for DISTILLCTL_DEBUG


def test_builtin_failure_says_built_in() -> None:
    reg: Registry[str] = Registry("teacher")
    reg.register("foo", make_broken, provenance=Provenance("distillctl.default_plugins.teachers", "distillctl", "0.1.0"))
    with pytest.raises(PluginError, match=r"^teacher 'foo' \(built-in\) failed: ValueError: bad width"):
        reg.create("foo")


def test_distillctl_error_from_a_plugin_passes_through() -> None:
    def refuses() -> str:
        raise WeightsError("no weights here.", hint="Use --teacher-weights.")

    reg: Registry[str] = Registry("teacher")
    reg.register("foo", refuses, provenance=MY_DIST)
    with pytest.raises(WeightsError) as info:
        reg.create("foo")
    assert str(info.value) == "no weights here. Use --teacher-weights."


def test_call_plugin_names_the_method() -> None:
    reg: Registry[str] = Registry("policy")
    entry = reg.register("chooser", Chooser, provenance=MY_DIST)
    chooser = reg.create("chooser")
    with pytest.raises(PluginError, match=r"^policy 'chooser' from plugin my-dist 1\.2\.0 failed in select: KeyError: 'x'"):
        call_plugin(entry, chooser.select)
    with pytest.raises(PluginError, match="failed in select: KeyError"):
        entry.call(chooser.select)
    with pytest.raises(WeightsError):
        entry.call(chooser.refuse)
    assert entry.call(lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(PluginError, match=r"^policy 'chooser' from plugin my-dist 1\.2\.0 failed in update: ZeroDivisionError"):
        with plugin_errors(entry, "update"):
            _ = 1 / 0


# ----------------------------------------------------------------- option types
def make_typed(*, arms: list, seed: int, window: int = 8, sigma: float = 0.1, order: Sequence[str] | None = None,
               mode: Literal["fast", "slow"] = "fast", tag: str | None = None, flags: dict[str, bool] | None = None,
               pair: tuple[int, int] = (1, 2), opaque: NotImportedHere = None, free=None) -> str:  # noqa: ANN001, F821
    return "typed"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("window", 4, None),
        ("window", "abc", "expected integer, got str 'abc'"),
        ("window", True, "expected integer, got bool True"),
        ("window", 2.5, "expected integer, got float 2.5"),
        ("sigma", 1, None),  # an int is a fine float
        ("sigma", "0.1", "expected number, got str '0.1'"),
        ("order", ["vision", "text"], None),
        ("order", "vision", "expected list of strings, got str 'vision'"),
        ("order", ["vision", 2], "expected list of strings, got list ['vision', 2]"),
        ("mode", "slow", None),
        ("mode", "medium", "expected one of 'fast', 'slow', got str 'medium'"),
        ("tag", "x", None),
        ("tag", 3, "expected string, got int 3"),
        ("flags", {"a": True}, None),
        ("flags", {"a": 1}, "expected table, got dict {'a': 1}"),
        ("pair", [3, 4], None),
        ("pair", [3], "expected list of 2 items (integer, integer), got list [3]"),
        ("opaque", object(), None),  # unresolvable annotation: anything goes
        ("free", "anything", None),  # no annotation
    ],
)
def test_check_option_against_the_annotation(key: str, value: object, problem: str | None) -> None:
    entry = Registry("policy").register("typed", make_typed)
    assert entry.check_option(key, value) == problem


def test_option_types_of_a_class_factory_come_from_init() -> None:
    class Policy:
        def __init__(self, arms: list, seed: int, window: int = 8) -> None:
            self.window = window

    entry = Registry("policy").register("cls", Policy)
    assert entry.option_types()["window"] is int
    assert entry.check_option("window", "8") == "expected integer, got str '8'"
