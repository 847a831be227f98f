"""open_clip pretrained tags: the ones we know, and checks that need neither torch nor open_clip.

``preflight_weights`` answers "can this teacher's weights be had?" in milliseconds for the open_clip
CoCa tags we know (OPEN_CLIP.md §5): a tag that is not in the Hugging Face cache while the hub is
unreachable fails with the same one-line message as the full loader, before torch is imported.
"""

from __future__ import annotations

from pathlib import Path

from distillctl import hf_cache
from distillctl.errors import WeightsError
from distillctl.hf_cache import hf_cache_dir, hub_reachable, offline

DEFAULT_TAG = "laion2b_s13b_b90k"
MODEL_OF_TEACHER = {"coca-large": "coca_ViT-L-14", "coca-base": "coca_ViT-B-32"}
# (open_clip model, tag) -> Hugging Face repo (open_clip 3.3.0 pretrained.py)
KNOWN_TAGS: dict[tuple[str, str], str] = {
    ("coca_ViT-B-32", "laion2b_s13b_b90k"): "laion/CoCa-ViT-B-32-laion2B-s13B-b90k",
    ("coca_ViT-B-32", "mscoco_finetuned_laion2b_s13b_b90k"): "laion/mscoco_finetuned_CoCa-ViT-B-32-laion2B-s13B-b90k",
    ("coca_ViT-L-14", "laion2b_s13b_b90k"): "laion/CoCa-ViT-L-14-laion2B-s13B-b90k",
    ("coca_ViT-L-14", "mscoco_finetuned_laion2b_s13b_b90k"): "laion/mscoco_finetuned_CoCa-ViT-L-14-laion2B-s13B-b90k",
    # CLIP (family clip): the default tag of each name below (distillctl.clip.models.default_weights)
    ("ViT-B-32", "laion2b_s34b_b79k"): "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ("ViT-B-16", "laion2b_s34b_b88k"): "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    ("ViT-L-14", "laion2b_s32b_b82k"): "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
}
# open_clip CLIP name -> the tag ``open-clip:NAME`` loads when --teacher-weights is not given
CLIP_DEFAULT_TAGS = {"ViT-B-32": "laion2b_s34b_b79k", "ViT-B-16": "laion2b_s34b_b88k", "ViT-L-14": "laion2b_s32b_b82k"}
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin")


def cached(repo_id: str, cache: Path) -> bool:
    """Is any open_clip weight file of ``repo_id`` in the HF cache?"""
    return hf_cache.cached(repo_id, cache, WEIGHT_FILES)


def unavailable_message(model_name: str, tag: str, repo_id: str, cache: Path, why: str) -> WeightsError:
    fix = (
        f"Pre-seed the HF cache ({cache}; set HF_HUB_CACHE or HF_HOME to use another), pass a local file with "
        "--teacher-weights PATH or local-dir:DIR, or use --teacher-weights random."
    )
    return WeightsError(f"--teacher-weights {tag}: {model_name} tag {tag!r} ({repo_id}) is not in the HF cache and {why}.",
                        hint=fix)


def preflight_weights(model_name: str, weights: str | None) -> None:
    """Fail fast (no torch) when a known pretrained tag can be neither found in the cache nor fetched."""
    tag = (weights or DEFAULT_TAG).lower().replace("-", "_")
    repo_id = KNOWN_TAGS.get((model_name, tag))
    if repo_id is None:  # a file, a folder, 'random' or another tag: the full loader decides
        return
    cache = hf_cache_dir()
    if cached(repo_id, cache):
        return
    if offline():
        raise unavailable_message(model_name, tag, repo_id, cache, "HF_HUB_OFFLINE is set")
    if not hub_reachable():
        raise unavailable_message(model_name, tag, repo_id, cache, "the hub is unreachable")


__all__ = ["CLIP_DEFAULT_TAGS", "DEFAULT_TAG", "KNOWN_TAGS", "MODEL_OF_TEACHER", "WEIGHT_FILES", "cached", "hf_cache_dir",
           "hub_reachable", "offline", "preflight_weights", "unavailable_message"]
