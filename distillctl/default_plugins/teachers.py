"""Built-in teachers (registered through the same hook as any third-party plugin).

``coca-large`` / ``coca-base`` are open_clip ``coca_ViT-L-14`` / ``coca_ViT-B-32`` (default weights: the
``laion2b_s13b_b90k`` tag); ``open-clip:NAME|CONFIG.json|DIR`` is any open_clip CLIP or CoCa config (the
family comes from the config: ``multimodal_cfg`` -> ``coca``, else ``clip``); ``quickstart`` is the bundled
tiny CoCa; ``clip-tiny`` a random-init tiny CLIP. ``device="meta"`` builds the architecture without weights.
torch and open_clip are imported inside the factories only.
"""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


def coca_large(weights: str | None = None, device: str = "cpu") -> Any:
    """open_clip CoCa ViT-L/14 (638M params; default weights laion2b_s13b_b90k)."""
    from distillctl.coca.models import load_coca_teacher

    return load_coca_teacher("coca-large", weights=weights, device=device)


def coca_base(weights: str | None = None, device: str = "cpu") -> Any:
    """open_clip CoCa ViT-B/32 (254M params; default weights laion2b_s13b_b90k)."""
    from distillctl.coca.models import load_coca_teacher

    return load_coca_teacher("coca-base", weights=weights, device=device)


def _preflight_for(teacher: str) -> Any:
    def preflight(weights: str | None = None, **_: Any) -> None:
        """Cheap check before anything heavy is imported: a known tag that cannot be had fails at once."""
        from distillctl.openclip.tags import MODEL_OF_TEACHER, preflight_weights

        preflight_weights(MODEL_OF_TEACHER[teacher], weights)

    return preflight


coca_large.preflight = _preflight_for("coca-large")  # type: ignore[attr-defined]
coca_base.preflight = _preflight_for("coca-base")  # type: ignore[attr-defined]


def open_clip_teacher(variant: str, weights: str | None = None, device: str = "cpu") -> Any:
    """Any open_clip CLIP or CoCa: open-clip:<model name>, open-clip:/path/config.json or open-clip:/path/local-dir."""
    from distillctl.openclip.config import open_clip_config

    if "multimodal_cfg" in open_clip_config(variant)[0]:  # the family comes from the config: multimodal_cfg = CoCa
        from distillctl.coca.models import load_coca_teacher

        return load_coca_teacher("open-clip", variant=variant, weights=weights, device=device)
    from distillctl.clip.models import load_open_clip_clip

    return load_open_clip_clip(variant, weights=weights, device=device)


def _open_clip_preflight(weights: str | None = None, variant: str | None = None, **_: Any) -> None:
    """Cheap check (no torch): a known CoCa / CLIP tag of ``open-clip:NAME`` that cannot be had fails at once."""
    from distillctl.openclip.tags import CLIP_DEFAULT_TAGS, preflight_weights

    if variant is None:
        return
    if weights is None and variant in CLIP_DEFAULT_TAGS:
        weights = CLIP_DEFAULT_TAGS[variant]
    preflight_weights(variant, weights)


open_clip_teacher.preflight = _open_clip_preflight  # type: ignore[attr-defined]


def clip_tiny(weights: str | None = None, device: str = "cpu") -> Any:
    """Tiny random-init open_clip CLIP (3.9M params, 64 px, fixed seed): offline smoke runs in seconds."""
    from distillctl.clip.models import load_tiny_teacher

    return load_tiny_teacher(weights=weights, device=device)


def quickstart(weights: str | None = None, device: str = "cpu") -> Any:
    """Bundled tiny CoCa trained on procedural shapes (runs offline in seconds)."""
    from distillctl.quickstart import load_quickstart_teacher

    return load_quickstart_teacher(weights=weights, device=device)


# the family and splitter each teacher's bundles name (Teacher.family / .splitter), declared without building
# anything so that `presets validate` checks the options of `[family] name = "auto"` against the right family
for _factory, _family in ((coca_large, "coca"), (coca_base, "coca"), (quickstart, "coca"), (clip_tiny, "clip")):
    _factory.family = _family  # type: ignore[attr-defined]
    _factory.splitter = _family  # type: ignore[attr-defined]


@hookimpl
def register_teachers(register: Register) -> None:
    register("coca-large", coca_large)
    register("coca-base", coca_base)
    register("open-clip:", open_clip_teacher)
    register("quickstart", quickstart)
    register("clip-tiny", clip_tiny)
