"""The batch loader: a deterministic, resumable index stream, a DataLoader that skips bad items,
a counter of what was skipped, and the checks that run before any model is built.

A batch may hold fewer than ``batch_size`` images (even none) when items were skipped: the loader
never substitutes other items, so step ``s`` always reads the same indices, which is what makes a
resumed run see the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from distillctl.data import SkipItem
from distillctl.errors import DataError
from distillctl.interfaces import Dataset, Tokenizer


# --------------------------------------------------------------------------- batch
@dataclass
class Batch:
    """What the loader yields for one step."""

    images: torch.Tensor  # [B, 3, H, W] float
    text: torch.Tensor | None  # [B, L] long, tokenized captions (None without a tokenizer)
    captions: list[str]
    labels: list[str | None]
    indices: list[int]  # dataset indices of the B good items
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (index, reason) of dropped items

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """The same batch with its tensors on ``device`` (use non_blocking with pinned memory)."""
        return Batch(
            self.images.to(device, non_blocking=non_blocking),
            None if self.text is None else self.text.to(device, non_blocking=non_blocking),
            self.captions,
            self.labels,
            self.indices,
            self.skipped,
        )

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True)
        return Batch(
            self.images.pin_memory(), None if self.text is None else self.text.pin_memory(), self.captions, self.labels, self.indices, self.skipped
        )


# --------------------------------------------------------------------------- sampler
class BatchSampler:
    """A deterministic stream of index batches, resumable at any step.

    The stream is the concatenation of per-epoch orders: epoch ``e`` is a permutation of
    ``range(n)`` drawn from ``numpy.random.default_rng([seed, e])`` (or ``range(n)`` itself when
    ``shuffle=False``). Step ``s`` holds stream positions ``[s * batch_size, (s + 1) * batch_size)``,
    so batches run across epoch boundaries and every batch has exactly ``batch_size`` indices.

    ``start_step`` is the first step yielded; ``steps`` is the step the stream ends at (exclusive,
    counted from step 0, so a resumed sampler with the same ``steps`` yields exactly the tail of the
    uninterrupted one); None = endless.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        start_step: int = 0,
        steps: int | None = None,
        offset: int = 0,
    ) -> None:
        if n < 1:
            raise DataError("cannot sample batches from a data source with no items.")
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size} (--batch-size).")
        if start_step < 0:
            raise DataError(f"start step must be at least 0, got {start_step}.")
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.start_step = start_step
        self.steps = steps
        self.offset = offset % n  # sequential streams start here (so a seed still changes the data)
        self._epoch = -1
        self._order: np.ndarray | None = None  # a permutation only when shuffling (streams can be 10^9 long)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch or self._order is None:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._order

    def indices(self, step: int) -> list[int]:
        """The dataset indices of step ``step`` (pure: depends only on n, batch_size, seed, shuffle)."""
        out: list[int] = []
        pos = step * self.batch_size
        end = pos + self.batch_size
        while pos < end:
            epoch, offset = divmod(pos, self.n)
            take = min(end - pos, self.n - offset)
            if self.shuffle:
                out.extend(int(i) for i in self._epoch_order(epoch)[offset : offset + take])
            else:  # sequential: no index array, so a 10^9-item stream costs nothing
                out.extend((self.offset + i) % self.n for i in range(offset, offset + take))
            pos += take
        return out

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.steps is None or step < self.steps:
            yield self.indices(step)
            step += 1

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an endless BatchSampler (steps=None) has no length")
        return max(self.steps - self.start_step, 0)


class RankSlice:
    """Rank ``rank``'s share of each global batch of ``sampler`` (``torchrun``: one process per rank).

    ``sampler`` yields global batches of ``world_size x b`` indices; rank ``r`` takes positions
    ``[r*b, (r+1)*b)``. The ranks' slices of a step are disjoint and together are exactly the global
    batch, so a run of W processes with per-rank batch b reads the same data as one process with
    batch W*b, and resuming at a step is as exact as it is for one process.
    """

    def __init__(self, sampler: BatchSampler, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside a world of {world_size} processes.")
        if sampler.batch_size % world_size:
            raise DataError(f"global batch {sampler.batch_size} does not split into {world_size} equal rank batches.")
        self.sampler, self.rank, self.world_size = sampler, rank, world_size
        self.batch_size = sampler.batch_size // world_size

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.batch_size
        for indices in self.sampler:
            yield indices[lo : lo + self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler)


# --------------------------------------------------------------------------- loader
@dataclass
class _Item:
    index: int
    image: Any  # transformed image, a [3, H, W] tensor
    caption: str
    label: str | None


@dataclass
class _Skipped:
    index: int
    reason: str


class _TransformedDataset(torch.utils.data.Dataset):
    """Map-style wrapper: applies the transform and turns SkipItem into a marker."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> _Item | _Skipped:
        try:
            sample = self.dataset[index]
        except SkipItem as exc:
            return _Skipped(index, exc.reason)
        return _Item(index, self.transform(sample.image), sample.caption, sample.label)


class _Collate:
    """Stacks the good items, tokenizes their captions and lists the skipped ones."""

    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: Sequence[_Item | _Skipped]) -> Batch:
        good = [it for it in items if isinstance(it, _Item)]
        skipped = [(it.index, it.reason) for it in items if isinstance(it, _Skipped)]
        captions = [it.caption for it in good]
        text: torch.Tensor | None = None
        if good:
            images = torch.stack([it.image for it in good])  # [B, 3, H, W]
            if self.tokenizer is not None:
                text = torch.as_tensor(self.tokenizer(captions)).long()  # [B, L]
        else:  # every item of this step was skipped: an empty batch the loop can pass over
            images = torch.zeros(0, 3, 0, 0)
            if self.tokenizer is not None:
                text = torch.zeros(0, int(getattr(self.tokenizer, "context_length", 0)), dtype=torch.long)
        return Batch(images, text, captions, [it.label for it in good], [it.index for it in good], skipped)


def make_batch(
    dataset: Dataset,
    indices: Sequence[int] | range,
    transform: Callable[[Any], torch.Tensor],
    tokenizer: Tokenizer | None,
) -> Batch:
    """One :class:`Batch` of ``dataset[indices]`` built exactly as the loader builds it (probe sets,
    evaluation); a selection with no usable item is a one-line DataError."""
    wrapped = _TransformedDataset(dataset, transform)
    batch = _Collate(tokenizer)([wrapped[int(i)] for i in indices])
    if len(batch) == 0:
        raise DataError(f"{dataset.describe()}: no usable item among the {len(indices)} selected.")
    return batch


def make_loader(
    dataset: Dataset,
    transform: Callable[[Any], torch.Tensor],
    tokenizer: Tokenizer | None,
    batch_sampler: BatchSampler | RankSlice,
    workers: int = 0,
    *,
    pin_memory: bool = False,
    generator: torch.Generator | None = None,
    nice: bool = False,
) -> DataLoader:
    """A DataLoader yielding :class:`Batch`, one per step of ``batch_sampler``.

    ``transform`` maps a PIL image to a ``[3, H, W]`` tensor; with ``workers > 0`` it, the dataset and
    the tokenizer must be picklable (no lambdas). Bad items are dropped and listed in
    ``Batch.skipped``; feed those to a :class:`SkipCounter`. ``nice``: workers run at the lowest CPU
    priority (for CPU runs, whose compute shares the cores with them).
    """
    if workers < 0:
        raise DataError(f"data.workers must be at least 0, got {workers} (--set data.workers=0).")
    return DataLoader(
        _TransformedDataset(dataset, transform),
        batch_sampler=batch_sampler,
        collate_fn=_Collate(tokenizer),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        generator=generator,  # worker seeds from here, not from the global RNG
        worker_init_fn=_yield_to_compute if workers > 0 and nice else None,
    )


def _yield_to_compute(worker_id: int) -> None:
    """A loader worker of a CPU run at the lowest priority: torch's threads compute on the same cores, and a
    worker at their priority preempts them (measured on 2 cores, 2 threads, quickstart batches: compute
    49.1 s with the worker at equal priority, 43.9 s niced, 41.1 s with no worker; the bare step 41.8 s)."""
    import os

    with contextlib.suppress(OSError):
        os.nice(19)


# --------------------------------------------------------------------------- streaming sources
class _StreamBatches(torch.utils.data.IterableDataset):
    """Batches of a streaming source (one with ``iter_samples``, e.g. ``wds``) for one rank.

    Loader worker ``w`` of ``n`` builds the steps ``s`` with ``(s - start_step) % n == w`` from its
    own share of the source (disjoint from every other rank's and worker's); the DataLoader hands
    them out round-robin, so steps arrive in order. Epochs repeat until ``steps``. A resumed stream
    re-reads and drops the batches before ``start_step`` (exact with ``data.workers = 0``, or when
    the resume step is a multiple of the worker count; otherwise approximate)."""

    def __init__(self, dataset: Any, transform: Callable[[Any], torch.Tensor], tokenizer: Tokenizer | None,
                 batch_size: int, rank: int, world_size: int, start_step: int, steps: int | None, seed: int) -> None:
        self.dataset, self.transform, self.collate = dataset, transform, _Collate(tokenizer)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.start_step, self.steps, self.seed = start_step, steps, seed

    def _items(self, worker: int, workers: int) -> Iterator[_Item | _Skipped]:
        epoch = 0
        while True:
            empty = True
            for index, sample in self.dataset.iter_samples(self.rank, self.world_size, worker, workers, epoch, self.seed):
                empty = False
                if isinstance(sample, SkipItem):
                    yield _Skipped(index, sample.reason)
                else:
                    yield _Item(index, self.transform(sample.image), sample.caption, sample.label)
            if empty:
                raise DataError(f"{self.dataset.describe()}: rank {self.rank}, loader worker {worker} has no samples.")
            epoch += 1

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        items = self._items(worker, workers)
        done = sum(1 for s in range(self.start_step) if s % workers == worker)  # this worker's batches so far
        step = self.start_step + ((worker - self.start_step) % workers)
        for _ in range(done):  # resume: re-read and drop (the stream has no random access)
            for _ in range(self.batch_size):
                next(items)
        while self.steps is None or step < self.steps:
            yield self.collate([next(items) for _ in range(self.batch_size)])
            step += workers


def make_stream_loader(dataset: Any, transform: Callable[[Any], torch.Tensor], tokenizer: Tokenizer | None, *,
                       batch_size: int, rank: int = 0, world_size: int = 1, start_step: int = 0, steps: int | None = None,
                       seed: int = 0, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader yielding this rank's :class:`Batch` per step from a streaming source."""
    if workers < 0:
        raise DataError(f"data.workers must be at least 0, got {workers} (--set data.workers=0).")
    shards = len(getattr(dataset, "shards", ())) or None
    units = world_size * max(workers, 1)
    if shards is not None and shards < units:
        raise DataError(f"{dataset.describe()}: {shards} shard(s) cannot be split over {world_size} rank(s) x "
                        f"{max(workers, 1)} loader worker(s); use at least {units} shards or fewer workers (--set data.workers=0).")
    return DataLoader(_StreamBatches(dataset, transform, tokenizer, batch_size, rank, world_size, start_step, steps, seed),
                      batch_size=None, num_workers=workers, persistent_workers=workers > 0, pin_memory=pin_memory)


# --------------------------------------------------------------------------- skip counting
class SkipCounter:
    """Counts the distinct items skipped over a run and remembers the first reason."""

    def __init__(self) -> None:
        self._indices: set[int] = set()
        self.first: str | None = None

    def add(self, skipped: Sequence[tuple[int, str]]) -> None:
        for index, reason in skipped:
            if self.first is None:
                self.first = reason
            self._indices.add(int(index))

    @property
    def count(self) -> int:
        return len(self._indices)

    def summary(self) -> str | None:
        """``"skipped N images (first: <reason>)"``, or None when nothing was skipped."""
        if not self._indices:
            return None
        noun = "image" if self.count == 1 else "images"
        return f"skipped {self.count:,} {noun} (first: {self.first})"

    def state_dict(self) -> dict[str, Any]:
        return {"indices": sorted(self._indices), "first": self.first}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._indices = {int(i) for i in state.get("indices", [])}
        self.first = state.get("first")


# --------------------------------------------------------------------------- early checks
def check_usable(dataset: Dataset) -> None:
    """Fail before any model is built if the source has no usable item.

    Reads items in order until one loads; raises DataError naming the source, how many items were
    skipped and the first reason if none does.
    """
    if getattr(dataset, "streaming", False):  # a stream: read from its start until one sample loads
        first_reason, seen = None, 0
        for _, sample in dataset.iter_samples(0, 1, 0, 1, 0):
            if not isinstance(sample, SkipItem):
                return
            first_reason, seen = first_reason or sample.reason, seen + 1
            if seen >= 1000:
                break
        raise DataError(f"{dataset.describe()}: no usable sample among the first {seen:,} (first: {first_reason}).")
    n = len(dataset)
    if n == 0:
        raise DataError(f"{dataset.describe()}: no items; check the path, the split and the file's contents.")
    first: str | None = None
    for i in range(n):
        try:
            dataset[i]
            return
        except SkipItem as exc:
            if first is None:
                first = exc.reason
    raise DataError(
        f"{dataset.describe()}: no usable item, all {n:,} skipped (first: {first}); fix the files or choose another source."
    )


def check_batch_size(dataset: Dataset, batch_size: int) -> None:
    """Fail if a batch would hold more items than the source has."""
    n = len(dataset)
    if batch_size > n:
        raise DataError(
            f"batch size {batch_size:,} is larger than the {n:,} items of {dataset.describe()}; "
            f"use --batch-size {n} or less, or more data."
        )
