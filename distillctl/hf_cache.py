"""Hugging Face cache helpers that need neither torch nor open_clip (public: plugins may use them).

* :func:`hf_cache_dir` -- the HF hub cache, read from the environment at call time;
* :func:`offline` -- is ``HF_HUB_OFFLINE`` set;
* :func:`hub_reachable` -- can a TCP connection reach the hub (or the HTTPS proxy) within a timeout;
* :func:`cached` -- is one of a repo's files in the cache.

They let a teacher fail in about 2 s with one line when its weights can be neither found nor fetched,
instead of after a download library's minute of retries.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 2.0


def hf_cache_dir() -> Path:
    """The HF hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to 1 / on / yes / true."""
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


def cached(repo_id: str, cache: Path, files: Iterable[str]) -> bool:
    """Is any of ``files`` of ``repo_id`` in the HF cache (``models--org--name/snapshots/*/FILE``)?"""
    snapshots = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    names = tuple(files)
    return snapshots.is_dir() and any((snap / f).is_file() for snap in snapshots.iterdir() for f in names)


__all__ = ["PROBE_TIMEOUT_S", "cached", "hf_cache_dir", "hub_reachable", "offline"]
