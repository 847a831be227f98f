"""Built-in datasets (registered through the same hook as any third-party plugin).

Factories take explicit keyword options (config validation reads them); the engine passes
``split``. The data modules are imported inside the factories so that listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

from distillctl.errors import DataError
from distillctl.hookspecs import Register, hookimpl


def _required(value: Any, key: str, source: str, what: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"data.{key} is required for the {source} source (--set data.{key}={what}).")
    return value


def shapes(*, split: str = "train", image_size: int = 64, seed: int = 0, length: int = 0) -> Any:
    """Procedural coloured shapes with compositional captions: offline, no download (splits train, val, test, hard)."""
    from distillctl.data.shapes import ShapesDataset

    return ShapesDataset(split=split, image_size=image_size, seed=seed, length=length or None)


def _split(split: str, val_fraction: float, test_fraction: float) -> Any:
    """The part of a source without splits of its own (csv, coco, folder) as one
    :class:`distillctl.data.files.Split`: the last ``test_fraction`` of the items in file order is ``test``,
    the ``val_fraction`` before it ``val``. Bad fractions fail here, before any file is read."""
    from distillctl.data.files import Split

    return Split(split, val_fraction, test_fraction)


def csv(
    *,
    split: str = "train",
    path: str | None = None,
    image_column: str = "filepath",
    caption_column: str = "title",
    label_column: str | None = None,
    separator: str = "auto",
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
) -> Any:
    """CSV or TSV of image paths and captions (open_clip layout: filepath, title; relative paths)."""
    from distillctl.data.files import CsvDataset

    part = _split(split, val_fraction, test_fraction)
    return CsvDataset(_required(path, "path", "csv", "FILE"), image_column=image_column, caption_column=caption_column,
                      label_column=label_column, separator=separator, split=part)


def coco(*, split: str = "train", path: str | None = None, images: str | None = None, val_fraction: float = 0.05,
         test_fraction: float = 0.05) -> Any:
    """COCO captions file (captions_*.json); every caption of an image is kept for evaluation."""
    from distillctl.data.files import CocoDataset

    part = _split(split, val_fraction, test_fraction)
    return CocoDataset(_required(path, "path", "coco", "captions_val2017.json"), images=images, split=part)


def folder(*, split: str = "train", path: str | None = None, recursive: bool = True, captions: str = "txt",
           val_fraction: float = 0.05, test_fraction: float = 0.05) -> Any:
    """Folder of images with same-name .txt captions; subfolder names become labels (captions=label: an
    ImageFolder of classes, for zero-shot)."""
    from distillctl.data.files import FolderDataset

    part = _split(split, val_fraction, test_fraction)
    return FolderDataset(_required(path, "path", "folder", "DIR"), split=part, recursive=recursive, captions=captions)


def karpathy(*, split: str = "test", path: str | None = None, images: str | None = None) -> Any:
    """Karpathy split file (dataset_coco.json / dataset_flickr30k.json): COCO 5k / Flickr30k 1k test sets, all captions."""
    from distillctl.data.files import KarpathyDataset

    return KarpathyDataset(_required(path, "path", "karpathy", "dataset_coco.json"), images=images, split=split)


def wds(
    *,
    split: str = "train",
    path: str | None = None,
    image_key: str = "jpg;png;jpeg;webp",
    caption_key: str = "txt",
    samples: int = 0,
    shuffle_buffer: int = 1000,
    val_shards: int = -1,
    eval_samples: int = 1000,
    seed: int = 0,
) -> Any:
    """webdataset tar shards, streamed ('shards/{00000..00127}.tar'; open_clip's keys); needs distillctl[wds]."""
    from distillctl.data.wds import WdsDataset

    return WdsDataset(
        _required(path, "path", "wds", "'shards/{00000..00127}.tar'"),
        split=split,
        image_key=image_key,
        caption_key=caption_key,
        samples=samples,
        shuffle_buffer=shuffle_buffer,
        val_shards=val_shards,
        eval_samples=eval_samples,
        seed=seed,
    )


@hookimpl
def register_datasets(register: Register) -> None:
    register("shapes", shapes)
    register("csv", csv, aliases=("tsv",))
    register("coco", coco)
    register("folder", folder)
    register("karpathy", karpathy)
    register("wds", wds, aliases=("webdataset",))
