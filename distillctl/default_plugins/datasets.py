"""Built-in datasets (registered through the same hook as any third-party plugin).

Factories take explicit keyword options (config validation reads them); the engine passes
``split``. The data modules are imported inside the factories so that listing plugins stays fast.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
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


def split_by_position(factory: Callable[..., Any]) -> Callable[..., Any]:
    """A factory of a source without splits of its own, with the options ``val_fraction`` and
    ``test_fraction`` (0.05 each) added: they and ``split`` reach ``factory`` as one
    :class:`distillctl.data.files.Split` (the last 5 % of the items in file order is ``test``, the 5 %
    before it ``val``). One definition for the ``csv``, ``coco`` and ``folder`` sources; the options are
    real keyword parameters of the returned factory, so config validation sees and checks them."""
    params = list(inspect.signature(factory).parameters.values())
    fractions = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=0.05, annotation=float)
                 for key in ("val_fraction", "test_fraction")]

    def source(*, split: str = "train", val_fraction: float = 0.05, test_fraction: float = 0.05, **options: Any) -> Any:
        from distillctl.data.files import Split

        return factory(split=Split(split, val_fraction, test_fraction), **options)

    source.__signature__ = inspect.Signature([*params, *fractions])  # type: ignore[attr-defined]
    source.__annotations__ = {**typing.get_type_hints(factory), "val_fraction": float, "test_fraction": float}
    source.__annotations__["split"] = str
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        setattr(source, attr, getattr(factory, attr))
    return source


@split_by_position
def csv(
    *,
    split: Any = "train",
    path: str | None = None,
    image_column: str = "filepath",
    caption_column: str = "title",
    label_column: str | None = None,
    separator: str = "auto",
) -> Any:
    """CSV or TSV of image paths and captions (open_clip layout: filepath, title; relative paths)."""
    from distillctl.data.files import CsvDataset

    return CsvDataset(_required(path, "path", "csv", "FILE"), image_column=image_column, caption_column=caption_column,
                      label_column=label_column, separator=separator, split=split)


@split_by_position
def coco(*, split: Any = "train", path: str | None = None, images: str | None = None) -> Any:
    """COCO captions file (captions_*.json); every caption of an image is kept for evaluation."""
    from distillctl.data.files import CocoDataset

    return CocoDataset(_required(path, "path", "coco", "captions_val2017.json"), images=images, split=split)


@split_by_position
def folder(*, split: Any = "train", path: str | None = None, recursive: bool = True, captions: str = "txt") -> Any:
    """Folder of images with same-name .txt captions; subfolder names become labels (captions=label: an
    ImageFolder of classes, for zero-shot)."""
    from distillctl.data.files import FolderDataset

    return FolderDataset(_required(path, "path", "folder", "DIR"), split=split, recursive=recursive, captions=captions)


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
