"""``wds``: webdataset tar shards (the format open_clip's training reads), streamed.

``data.path`` is a brace pattern of local shards, e.g. ``shards/{00000..00127}.tar`` (several
patterns may be joined with ``::``). Each sample is the tar members sharing one key (``0001.jpg`` +
``0001.txt``); ``image_key`` / ``caption_key`` list the accepted extensions, ``;``-separated, with
open_clip's defaults (``jpg;png;jpeg;webp`` and ``txt``). The tar format itself is read by the
``webdataset`` package (``pip install 'distillctl[wds]'``).

Splits: the last ``val_shards`` shards are held out (default: 1 when there are at least 2 shards).
``train`` streams the other shards; ``val``/``test`` (the probe set and evaluation) read the held-out
shards' first ``eval_samples`` samples into an indexable list (half each when both are asked for:
val = even positions, test = odd). ``all`` streams every shard.

Streaming (the ``train`` split): the shards are split across ranks and loader workers -- unit
``u = rank * workers + worker`` reads shards ``u, u + R*W, ...`` -- so within an epoch no sample is
read by two ranks; a shuffle buffer (``shuffle_buffer`` samples, seeded by seed, epoch and unit) mixes
samples across shards; epochs repeat (shard order reshuffled) until the run has its steps. A sample
that cannot be used (missing image or caption member, undecodable image, empty caption) raises
:class:`~distillctl.data.SkipItem` and is dropped and counted like in every other source. The sample
count is ``samples`` when given, else estimated as (members of the first shard) x (shards).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from distillctl.data import SkipItem
from distillctl.errors import DataError
from distillctl.interfaces import Sample

KEY_STRIDE = 10**7  # sample index = shard * KEY_STRIDE + position in shard (unique, so skips count once)


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError:
        raise DataError("the wds data source needs the webdataset package: pip install 'distillctl[wds]'.") from None
    return webdataset


def expand_shards(pattern: str) -> list[Path]:
    """``a/{000..003}.tar::b/x.tar`` -> local shard paths (brace expansion as webdataset does it)."""
    from braceexpand import braceexpand

    if not pattern or not str(pattern).strip():
        raise DataError("data.path is required for the wds source (--set data.path='shards/{00000..00127}.tar').")
    paths = [Path(p) for part in str(pattern).split("::") for p in braceexpand(part.strip())]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"wds shard {missing[0]} not found{more}; data.path={pattern!r} is expanded to {len(paths)} "
                        "local .tar file(s).")
    return paths


def _extensions(spec: str) -> list[str]:
    return [e.strip().lower().lstrip(".") for e in spec.split(";") if e.strip()]


def _members(path: Path) -> Iterator[dict[str, Any]]:
    """The samples of one shard, as webdataset groups them: ``{"__key__": ..., "jpg": bytes, ...}``."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    _webdataset()
    with open(path, "rb") as stream:
        yield from group_by_keys(tar_file_expander([{"url": str(path), "stream": stream}]))


class WdsDataset:
    """A webdataset source: streamed for ``train``/``all``, indexable for ``val``/``test``."""

    def __init__(self, path: str, *, split: str = "train", image_key: str = "jpg;png;jpeg;webp", caption_key: str = "txt",
                 samples: int = 0, shuffle_buffer: int = 1000, val_shards: int = -1, eval_samples: int = 1000,
                 seed: int = 0) -> None:
        _webdataset()
        if split not in ("train", "val", "test", "all"):
            raise DataError(f"unknown split {split!r} for the wds source; valid splits: train, val, test, all.")
        for key, value in (("samples", samples), ("shuffle_buffer", shuffle_buffer), ("eval_samples", eval_samples)):
            if value < 0:
                raise DataError(f"data.{key} must be at least 0, got {value}.")
        self.pattern = path
        self.shards_all = expand_shards(path)
        self.image_keys, self.caption_keys = _extensions(image_key), _extensions(caption_key)
        if not self.image_keys or not self.caption_keys:
            raise DataError("data.image_key and data.caption_key must each name at least one extension (e.g. 'jpg;png').")
        n = len(self.shards_all)
        held = (1 if n >= 2 else 0) if val_shards < 0 else val_shards
        if held >= n and split in ("train",) and n:
            raise DataError(f"data.val_shards={held} holds out every one of the {n} shard(s): nothing left to train on.")
        self.split, self.seed, self.shuffle_buffer = split, seed, shuffle_buffer
        self.held_out = self.shards_all[n - held:] if held else self.shards_all
        self.shards = self.shards_all if split == "all" else (self.shards_all[: n - held] if split == "train" else self.held_out)
        self.streaming = split in ("train", "all")
        self._given = samples
        self._eval: list[tuple[int, dict[str, Any]]] | None = None
        self.eval_samples = eval_samples

    # ------------------------------------------------------------------ size
    def __len__(self) -> int:
        if not self.streaming:
            return len(self._eval_items())
        if self._given:
            return self._given
        first = sum(1 for _ in _members(self.shards[0])) if self.shards else 0
        return first * len(self.shards)

    @property
    def estimated(self) -> bool:
        return self.streaming and not self._given

    def describe(self) -> str:
        count = f"~{len(self):,} samples (estimated)" if self.estimated else f"{len(self):,} samples"
        return f"wds {self.pattern} ({self.split}: {len(self.shards)} shard(s), {count})"

    # ------------------------------------------------------------------ decoding
    def _sample(self, raw: dict[str, Any], where: str) -> Sample:
        image = next((raw[k] for k in self.image_keys if k in raw), None)
        caption = next((raw[k] for k in self.caption_keys if k in raw), None)
        if image is None:
            raise SkipItem(f"{where}: no image member ({'/'.join(self.image_keys)})")
        if caption is None:
            raise SkipItem(f"{where}: no caption member ({'/'.join(self.caption_keys)})")
        try:
            with Image.open(io.BytesIO(image)) as img:
                img.load()
                rgb = img.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - any decoder failure is one unusable sample
            raise SkipItem(f"{where}: undecodable image ({type(exc).__name__})") from None
        text = caption.decode("utf-8", errors="replace").strip() if isinstance(caption, bytes) else str(caption).strip()
        if not text:
            raise SkipItem(f"{where}: empty caption")
        return Sample(image=rgb, caption=text)

    # ------------------------------------------------------------------ indexable splits (val / test)
    def _eval_items(self) -> list[tuple[int, dict[str, Any]]]:
        if self._eval is None:
            items: list[tuple[int, dict[str, Any]]] = []
            want = self.eval_samples * (2 if self.split in ("val", "test") else 1)
            for shard in self.shards:
                for pos, raw in enumerate(_members(shard)):
                    items.append((self.shards_all.index(shard) * KEY_STRIDE + pos, raw))
                    if len(items) >= want:
                        break
                if len(items) >= want:
                    break
            if self.split in ("val", "test"):  # val: even positions, test: odd (disjoint)
                items = items[0 if self.split == "val" else 1::2]
            self._eval = items
        return self._eval

    def __getitem__(self, i: int) -> Sample:
        if self.streaming:
            for index, sample in self.iter_samples(0, 1, 0, 1, 0):  # in stream order (check_usable reads item 0)
                if index == i:
                    if isinstance(sample, SkipItem):
                        raise sample
                    return sample
            raise IndexError(i)
        index, raw = self._eval_items()[i]
        return self._sample(raw, f"{self._where(index)}")

    def _where(self, index: int) -> str:
        shard, pos = divmod(index, KEY_STRIDE)
        return f"{self.shards_all[shard].name}#{pos}"

    # ------------------------------------------------------------------ streaming (train)
    def units(self, world_size: int, workers: int) -> int:
        return world_size * max(workers, 1)

    def iter_samples(self, rank: int, world_size: int, worker: int, num_workers: int, epoch: int,
                     seed: int | None = None) -> Iterator[tuple[int, Sample | SkipItem]]:
        """This (rank, worker)'s samples of ``epoch``: its shards (disjoint from every other unit's),
        shuffled through a buffer seeded by (``seed`` -- the run's, else ``data.seed`` --, epoch, unit).
        Yields (sample index, Sample or the SkipItem saying why not)."""
        seed = self.seed if seed is None else seed
        units = world_size * max(num_workers, 1)
        unit = rank * max(num_workers, 1) + worker
        order = list(range(len(self.shards)))
        rng = random.Random(f"wds:{seed}:{epoch}")
        rng.shuffle(order)  # the same shard order on every unit, then dealt round-robin
        mine = [self.shards[i] for i in order[unit::units]]
        buf_rng = random.Random(f"wds-buffer:{seed}:{epoch}:{unit}")
        buffer: list[tuple[int, Sample | SkipItem]] = []
        for shard in mine:
            base = self.shards_all.index(shard) * KEY_STRIDE
            for pos, raw in enumerate(_members(shard)):
                index = base + pos
                try:
                    item: Sample | SkipItem = self._sample(raw, self._where(index))
                except SkipItem as exc:
                    item = exc
                if self.shuffle_buffer <= 1:
                    yield index, item
                    continue
                buffer.append((index, item))
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(buf_rng.randrange(len(buffer)))
        while buffer:
            yield buffer.pop(buf_rng.randrange(len(buffer)))


__all__ = ["KEY_STRIDE", "WdsDataset", "expand_shards"]
