"""Labelled image data: ``shapes-labels`` (procedural, offline) and ``image-folder`` (one sub-folder per class).

``shapes-labels`` draws, for every index, one *large* shape (the label: circle, square, triangle,
diamond or star) and zero to two *small* distractor shapes of other kinds, in random colours on a
grey background. Colours, sizes and positions carry no information about the label, so a model must
see the outline of the largest object. Everything is deterministic from ``(seed, split, index)``
(``numpy.random.default_rng([seed, split_code, index])``, the split code disjoint from the core
``shapes`` source's), so the splits are disjoint streams, exactly like the core ``shapes`` source.
The colour table, the shape names and their drawing are the core source's (``distillctl.data``: ``COLOURS``,
``SHAPES``, ``draw_shape``).

``image-folder`` is torchvision's ``ImageFolder`` layout: ``ROOT/<class>/<image>``; the sub-folder
name is the label, the sorted sub-folder names are the classes. When ``ROOT`` has ``train/``,
``val/`` and ``test/`` folders of that layout, each split reads its own; otherwise one folder is cut
into train / val / test by position (``val_fraction``, ``test_fraction``) per class, so every split
sees every class. Unreadable images are skipped and counted (:class:`distillctl.data.SkipItem`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from distillctl.data import COLOURS, SHAPES, SkipItem, draw_shape, split_range
from distillctl.errors import DataError
from distillctl.interfaces import Sample

CLASSES: tuple[str, ...] = SHAPES  # circle, square, triangle, diamond, star
SPLITS = {"train": 10, "val": 11, "test": 12}  # codes 10+: disjoint from the core shapes splits (0-4)
LENGTHS = {"train": 10**9, "val": 2_000, "test": 1_000}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def draw_labelled(seed: int, split: str, index: int, image_size: int = 32) -> tuple[Image.Image, str]:
    """Sample ``index`` of ``split``: the image and its label (the shape of the large object)."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    s = image_size / 32  # radii below are for 32 px
    colours = list(COLOURS)
    label = CLASSES[int(rng.integers(0, len(CLASSES)))]
    r_big = float(rng.uniform(7.0, 10.0)) * s
    objs = [(label, float(rng.uniform(r_big + 1, image_size - r_big - 1)), float(rng.uniform(r_big + 1, image_size - r_big - 1)), r_big)]
    others = [c for c in CLASSES if c != label]
    for _ in range(int(rng.integers(0, 3))):  # 0-2 small distractors of other shapes, not overlapping
        r = float(rng.uniform(2.5, 3.5)) * s
        for _try in range(20):
            x, y = float(rng.uniform(r + 1, image_size - r - 1)), float(rng.uniform(r + 1, image_size - r - 1))
            if all(math.hypot(x - ox, y - oy) > r + orad + 1 for _, ox, oy, orad in objs):
                objs.append((others[int(rng.integers(0, len(others)))], x, y, r))
                break
    level = int(rng.integers(0, 90))
    img = Image.new("RGB", (image_size, image_size), (level, level, level))
    draw = ImageDraw.Draw(img)
    for shape, x, y, r in objs:
        base = COLOURS[colours[int(rng.integers(0, len(colours)))]]
        fill = tuple(int(min(255, max(0, c + int(j)))) for c, j in zip(base, rng.integers(-25, 26, size=3), strict=True))
        draw_shape(draw, shape, x, y, r, fill)
    return img, label


class ShapesLabelsDataset:
    """Procedural labelled shapes (see the module docstring): 5 classes, offline, deterministic."""

    classes = CLASSES

    def __init__(self, split: str = "train", image_size: int = 32, seed: int = 0, length: int | None = None) -> None:
        if split not in SPLITS:
            raise DataError(f"shapes-labels: unknown split {split!r}; valid splits: {', '.join(SPLITS)}.")
        if not isinstance(image_size, int) or image_size < 16:
            raise DataError(f"shapes-labels: image_size must be an integer of at least 16, got {image_size!r} "
                            "(--set data.image_size=32).")
        self.name = "shapes-labels"
        self.split, self.image_size, self.seed = split, image_size, seed
        self.length = int(length) if length else LENGTHS[split]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(index)
        img, label = draw_labelled(self.seed, self.split, int(index), self.image_size)
        caption = f"a {label}"
        return Sample(image=img, caption=caption, label=label, captions=[caption])

    def describe(self) -> str:
        return f"shapes-labels {self.split} split ({self.length:,} items, {self.image_size}px, seed {self.seed})"


class ImageFolderDataset:
    """``ROOT/<class>/<image>`` (torchvision ImageFolder layout); labels are the sub-folder names."""

    name = "image-folder"

    def __init__(self, root: str | Path, split: str = "train", val_fraction: float = 0.1, test_fraction: float = 0.1) -> None:
        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root} (set --set data.path=DIR, a folder with one "
                            "sub-folder of images per class).")
        base, presplit = self.root, all((self.root / s).is_dir() for s in ("train", "val", "test"))
        if presplit:
            if split not in ("train", "val", "test"):
                raise DataError(f"image-folder: unknown split {split!r}; valid splits: train, val, test.")
            base = self.root / split
        self.classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise DataError(f"{base}: no class sub-folders; the layout is ROOT/<class>/<image> (ImageFolder).")
        self.items: list[tuple[Path, str]] = []
        for c in self.classes:
            files = sorted(p for p in (base / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            chosen = files if presplit else [files[i] for i in split_range(len(files), split, val_fraction, test_fraction)]
            self.items += [(p, c) for p in chosen]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        path, label = self.items[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one skipped item
            raise SkipItem(f"{path}: unreadable image ({type(exc).__name__})") from None
        return Sample(image=img, caption=label, label=label, captions=[label])

    def describe(self) -> str:
        return f"image-folder {self.root} (split {self.split}: {len(self):,} images, {len(self.classes)} classes)"
