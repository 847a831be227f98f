"""Data sources and the batch loader.

``SkipItem`` is the one signal a source gives for an item it cannot use (missing or corrupt
image, empty caption): the loader catches it, drops the item from its batch and counts it.

The file sources (:mod:`distillctl.data.files`) need only PIL; the loader
(:mod:`distillctl.data.loader`) needs torch and is imported lazily on first use of one of its
names, so ``from distillctl.data import SkipItem`` stays cheap.
"""

from __future__ import annotations

from typing import Any


class SkipItem(Exception):
    """Raised by ``Dataset.__getitem__`` for an unusable item; ``reason`` says why, in one line.

    Example reasons: ``"/data/a.jpg: missing file"``, ``"/data/b.jpg: empty caption"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader worker processes
        return (type(self), (self.reason,))


from distillctl.data.files import CocoDataset, CsvDataset, FolderDataset, Split, split_range  # noqa: E402
from distillctl.data.simple import ImageTransform, WordTokenizer  # noqa: E402

_LOADER_NAMES = ("Batch", "BatchSampler", "SkipCounter", "check_batch_size", "check_usable", "make_batch", "make_loader")
_SHAPES_NAMES = ("COLOURS", "SHAPES", "VOCAB_WORDS", "ShapesDataset", "draw_shape")


def __getattr__(name: str) -> Any:
    if name in _LOADER_NAMES:  # torch is imported here, not when the package is
        from distillctl.data import loader

        return getattr(loader, name)
    if name in _SHAPES_NAMES:  # numpy is imported here, not when the package is
        from distillctl.data import shapes

        return getattr(shapes, name)
    raise AttributeError(f"module 'distillctl.data' has no attribute {name!r}")


__all__ = [
    "SkipItem",
    "CsvDataset",
    "CocoDataset",
    "FolderDataset",
    "Split",
    "split_range",
    "ImageTransform",
    "WordTokenizer",
    *_LOADER_NAMES,
    *_SHAPES_NAMES,
]
