"""Resumable checkpoints: atomic, checksummed, fingerprinted, and never the only copy.

File format (``OUT/checkpoints/last.pt``; the one before it is ``prev.pt``)::

    b"DISTILLCTL-CKPT 1\\n"                       magic + format version
    {"sha256": ..., "fingerprint": ..., "size": N}\\n   one JSON header line
    <N bytes>                                      torch.save() of the blob

The checksum covers the payload bytes, so a truncated or bit-flipped file is found *before* it is
unpickled; the payload is then read with ``torch.load(weights_only=True)`` only (tensors, state
dicts and JSON strings, as the engine writes them). The fingerprint (:func:`fingerprint`) ties a
checkpoint to the configuration and architectures it was written for, so a checkpoint of another
run is refused in one line instead of failing deep inside ``load_state_dict``.

Writes are atomic (temporary file, ``fsync``, ``rename``), and the previous checkpoint is kept
(``last.pt`` -> ``prev.pt``) so one damaged file never loses the run: :func:`load` falls back to
``prev.pt`` and says so. A crash between the two renames leaves only ``prev.pt``, which
:func:`load` and :func:`exists` accept. The blob is serialised in memory once (twice its size at
peak), which keeps the checksum a single pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillctl.errors import DistillctlError

if TYPE_CHECKING:  # pragma: no cover
    import torch

MAGIC = b"DISTILLCTL-CKPT 1\n"
LAST, PREV = "last.pt", "prev.pt"
TMP_PREFIX = ".tmp-"  # temporary files of an interrupted write: never read, removed by the next save

# config keys that may differ between the run that wrote a checkpoint and the one resuming it:
# evaluation and export happen after training; device, threads and loader workers change where and
# how fast the run computes, not which run it is (a resume on another device loads with
# ``map_location``; bit-exactness is promised for the same device only)
VOLATILE_CONFIG: dict[str, set[str] | None] = {
    "eval": None,  # the whole section
    "export": None,
    "train": {"device", "threads", "checkpoint_every", "probe_cache"},
    "data": {"workers"},
}


class CheckpointError(DistillctlError):
    """No usable checkpoint: damaged, not a checkpoint, or written for another run."""


# --------------------------------------------------------------------------- fingerprint
def fingerprint(cfg: dict[str, Any], models: dict[str, torch.nn.Module]) -> str:
    """sha256 over the run-relevant config and each model's state-dict layout (names, shapes, dtypes).

    Values are not hashed: they are what training changes. Config keys in :data:`VOLATILE_CONFIG`
    are left out (they may change on resume without making it another run).
    """
    relevant: dict[str, Any] = {}
    for section, table in cfg.items():
        drop = VOLATILE_CONFIG.get(section, set())
        if drop is None:
            continue
        relevant[section] = {k: v for k, v in table.items() if k not in drop} if isinstance(table, dict) else table
    layout = {
        name: [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
        for name, model in sorted(models.items())
    }
    doc = json.dumps({"config": relevant, "models": layout}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


# --------------------------------------------------------------------------- save / load
def exists(ckpt_dir: Path) -> bool:
    """Whether ``ckpt_dir`` holds a checkpoint file (not yet verified: :func:`load` does that)."""
    return any(_nonempty(Path(ckpt_dir) / n) for n in (LAST, PREV))


def save(ckpt_dir: Path, blob: dict[str, Any], *, fingerprint: str) -> Path:
    """Write ``blob`` atomically as ``ckpt_dir/last.pt``; the previous ``last.pt`` becomes ``prev.pt``."""
    import torch

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(TMP_PREFIX + "*"):  # left by a write that was killed (we own the run dir)
        with contextlib.suppress(OSError):
            stale.unlink()
    buf = io.BytesIO()
    torch.save(blob, buf)
    payload = buf.getbuffer()
    header = json.dumps({"sha256": hashlib.sha256(payload).hexdigest(), "fingerprint": fingerprint,
                         "size": len(payload)}).encode() + b"\n"
    tmp = ckpt_dir / f"{TMP_PREFIX}{os.getpid()}-{LAST}"
    global _saves
    _saves += 1
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(header)
        f.write(payload[: len(payload) // 2])
        _fault("mid-write", f)
        f.write(payload[len(payload) // 2:])
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the name points at them
    last, prev = ckpt_dir / LAST, ckpt_dir / PREV
    if last.exists():
        os.replace(last, prev)  # a crash right here leaves prev.pt only: load() falls back to it
        _fault("between-renames")
    os.replace(tmp, last)
    _fsync_dir(ckpt_dir)
    return last


_saves = 0


def _fault(where: str, f: Any = None) -> None:
    """Test hook for the kill tests: ``DISTILLCTL_FAULT=save:<n>:<where>`` SIGKILLs this process at
    ``where`` (``mid-write`` | ``between-renames``) of the n-th :func:`save`. Unset: does nothing."""
    spec = os.environ.get("DISTILLCTL_FAULT", "")
    if spec != f"save:{_saves}:{where}":
        return
    import signal

    if f is not None:
        f.flush()  # what a real crash leaves: half a file on disk
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def load(ckpt_dir: Path, *, fingerprint: str, map_location: Any = "cpu") -> tuple[dict[str, Any], str | None]:
    """The newest usable checkpoint's blob, and a one-line message when an older one had to be used.

    Raises :class:`CheckpointError` (one line) when no checkpoint in ``ckpt_dir`` is usable.
    """
    ckpt_dir = Path(ckpt_dir)
    problems: list[tuple[Path, str, bool]] = []  # (file, why, fingerprint mismatch)
    for name in (LAST, PREV):
        path = ckpt_dir / name
        if not path.exists():
            continue
        try:
            blob = _read(path, fingerprint, map_location)
        except _Unusable as exc:
            problems.append((path, exc.why, exc.foreign))
            continue
        note = None
        if problems:
            bad, why, _ = problems[0]
            note = f"{bad} is {why}; resuming from the previous checkpoint {path.name} instead."
        return blob, note
    if not problems:
        raise CheckpointError(f"no checkpoint in {ckpt_dir} (nothing to resume; set train.checkpoint_every to write one).")
    foreign = next(((p, w) for p, w, f in problems if f), None)
    if foreign is not None:
        raise CheckpointError(
            f"checkpoint {foreign[0]} {foreign[1]}: start a new run with --overwrite or another --out."
        )
    path, why, _ = problems[0]
    more = " (and so is prev.pt)" if len(problems) > 1 else ""
    raise CheckpointError(
        f"checkpoint {path} is {why}{more}; it cannot be resumed: start again with --overwrite or another --out."
    )


class _Unusable(Exception):
    def __init__(self, why: str, *, foreign: bool = False) -> None:
        super().__init__(why)
        self.why, self.foreign = why, foreign


def _read(path: Path, expected: str, map_location: Any) -> dict[str, Any]:
    import torch

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _Unusable(f"unreadable ({exc.strerror})") from None
    if not data.startswith(MAGIC):
        raise _Unusable("not a distillctl checkpoint (no checkpoint header; damaged, or written by another tool "
                        "or an older distillctl)")
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC):end])
        digest, fp, size = header["sha256"], header["fingerprint"], int(header["size"])
    except (ValueError, KeyError, TypeError):
        raise _Unusable("damaged (unreadable header)") from None
    payload = memoryview(data)[end + 1:]
    if len(payload) != size:
        raise _Unusable(f"damaged (truncated: {len(payload):,} of {size:,} bytes)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise _Unusable("damaged (checksum mismatch)")
    if fp != expected:
        raise _Unusable("belongs to another configuration/architecture (fingerprint differs)", foreign=True)
    try:
        blob = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure of a checksummed file: not ours to read
        raise _Unusable(f"damaged ({type(exc).__name__} while reading it)") from None
    if not isinstance(blob, dict):
        raise _Unusable("damaged (payload is not a checkpoint dictionary)")
    return blob


def _nonempty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """Every global generator a run draws from: torch (CPU + CUDA), Python ``random``, NumPy."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate()),
                           "numpy": json.dumps([np_state[1].tolist(), *np_state[2:]])}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"].cpu())
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


__all__ = ["CheckpointError", "exists", "fingerprint", "load", "rng_state", "save", "set_rng_state"]
