"""Pretrained-tag checks that need neither torch nor open_clip (fast failure before heavy imports).

``preflight_weights`` answers "can this teacher's weights be had?" in milliseconds for the open_clip
CoCa tags we know (OPEN_CLIP.md §5): a tag that is not in the Hugging Face cache while the hub is
unreachable fails with the same one-line message as the full loader, before torch is imported.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from distillctl.errors import WeightsError

PROBE_TIMEOUT_S = 2.0
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


def hf_cache_dir() -> Path:
    """The HF hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection reach the hub (or the HTTPS proxy) within ``timeout``? DNS included."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy if proxy else endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme in ("https", "") else 80)
    result: list[bool] = []

    def probe() -> None:  # getaddrinfo has no timeout of its own: run it in a thread we can abandon
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def cached(repo_id: str, cache: Path) -> bool:
    """Is any weight file of ``repo_id`` in the HF cache (``models--org--name/snapshots/*/FILE``)?"""
    snapshots = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return snapshots.is_dir() and any((snap / f).is_file() for snap in snapshots.iterdir() for f in WEIGHT_FILES)


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
