"""Registry[T]: register/get/resolve/create, duplicates, unknown names, aliases, prefix entries."""

from __future__ import annotations

import pytest

from distillctl.errors import DuplicateComponentError, UnknownComponentError
from distillctl.registry import Provenance, Registry

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
