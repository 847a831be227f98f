"""File-based data sources: a CSV/TSV of image paths and captions, a COCO captions file, a folder.

Each implements :class:`distillctl.interfaces.Dataset`. Building a source reads only the index
(CSV rows, JSON, a directory listing); images are opened in ``__getitem__``, which raises
:class:`distillctl.data.SkipItem` for an item that cannot be used, so that one bad file costs one
item, not the run.

Splits of file sources: ``"all"`` is every item; ``"train"``/``"val"``/``"test"`` is a
deterministic partition in file order (:class:`Split`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from distillctl.data import SkipItem
from distillctl.errors import DataError
from distillctl.interfaces import Sample

SPLITS = ("all", "train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CSV_FIELD_LIMIT = 16 * 2**20  # characters per CSV field (Python's default is 128 KiB)


# --------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class Split:
    """The part of a source without splits of its own (a CSV, a COCO file, a folder) that a dataset reads.

    The items stay in file order: the last ``test_fraction`` of them is ``test``, the ``val_fraction``
    before it is ``val``, the rest is ``train``; a non-zero fraction gets at least one item when there
    are three or more. ``"all"`` is everything. Bad fractions fail here, before any file is read.
    """

    name: str = "all"
    val_fraction: float = 0.05
    test_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.name not in SPLITS:
            raise DataError(f"unknown split {self.name!r} for a file source; valid splits: {', '.join(SPLITS)}.")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise DataError(f"data.{key} must be a number in [0, 1), got {value!r} (--set data.{key}=0.05).")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise DataError(f"data.val_fraction + data.test_fraction must be below 1, got {self.val_fraction} + "
                            f"{self.test_fraction}.")

    @classmethod
    def of(cls, split: str | Split) -> Split:
        """``split`` itself, or the split of that name with the default fractions."""
        return split if isinstance(split, Split) else cls(split)

    def positions(self, n: int) -> range:
        """Positions (into ``n`` items in file order) that belong to this split."""

        def count(fraction: float) -> int:
            k = int(round(n * fraction))
            return max(k, 1) if fraction > 0 and n >= 3 else k

        n_test = count(self.test_fraction)
        n_val = count(self.val_fraction)
        n_train = max(n - n_val - n_test, 0)
        if self.name == "all":
            return range(n)
        if self.name == "train":
            return range(0, n_train)
        if self.name == "val":
            return range(n_train, n_train + n_val)
        return range(n_train + n_val, n)

    def take(self, items: list[Any]) -> list[Any]:
        """The items of this split, in order."""
        return [items[i] for i in self.positions(len(items))]


def split_range(n: int, split: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> range:
    """Positions (into ``n`` items in file order) that belong to ``split`` (:class:`Split`)."""
    return Split(split, val_fraction, test_fraction).positions(n)


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image as RGB, or raise SkipItem saying why it cannot be used.

    Decoding is forced here (``load()``) so that a truncated or corrupt file is found now and
    not as a crash inside a transform. (A process that sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``
    gets PIL's grey fill instead.)
    """
    if not path.exists():
        raise SkipItem(f"{path}: missing file")
    if path.is_dir():
        raise SkipItem(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise SkipItem(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for unreadable/truncated/corrupt files
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise SkipItem(f"{path}: unreadable image ({detail})") from None


def _check_caption(caption: str | None, where: object) -> str:
    text = (caption or "").strip()
    if not text:
        raise SkipItem(f"{where}: empty caption")
    return text


def _require_file(path: str | Path, what: str, option: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} not found: {p} (check the path or set --set data.{option}=...).")
    if not p.is_file():
        raise DataError(f"{what} is not a file: {p} (point --set data.{option}=... at the file).")
    return p


def _fmt(n: int) -> str:
    return f"{n:,}"


# --------------------------------------------------------------------------- csv
class CsvDataset:
    """A CSV or TSV with one image path and one caption per row (open_clip's ``CsvDataset`` layout).

    Relative image paths are resolved against the CSV's folder.
    """

    name = "csv"

    def __init__(
        self,
        path: str | Path,
        image_column: str = "filepath",
        caption_column: str = "title",
        label_column: str | None = None,
        separator: str = "auto",
        split: str | Split = "all",
    ) -> None:
        split = Split.of(split)
        self.path = _require_file(path, "CSV file", "path")
        self.split = split.name
        self.root = self.path.parent
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}).") from None
        except OSError as exc:
            raise DataError(f"cannot read {self.path}: {exc.strerror}.") from None
        delimiter = _delimiter(text, separator)
        if csv.field_size_limit() < CSV_FIELD_LIMIT:  # Python's default (128 KiB) is below a long web caption
            csv.field_size_limit(CSV_FIELD_LIMIT)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            self._read(reader, image_column, caption_column, label_column, delimiter, split)
        except csv.Error as exc:  # a field over the limit, a NUL byte ...
            raise DataError(f"{self.path}:{reader.line_num}: not readable as CSV ({exc}).") from None

    def _read(self, reader: Any, image_column: str, caption_column: str, label_column: str | None, delimiter: str,
              split: Split) -> None:
        header = next(reader, None)
        if header is None:
            raise DataError(
                f"{self.path}: empty file; expected a header row with columns {image_column!r} and {caption_column!r}."
            )
        header = [h.strip() for h in header]
        wanted = [("image_column", image_column), ("caption_column", caption_column)]
        if label_column:
            wanted.append(("label_column", label_column))
        for option, column in wanted:
            if column not in header:
                sep_name = "tab" if delimiter == "\t" else repr(delimiter)
                raise DataError(
                    f"{self.path}: no column {column!r} (columns found: {', '.join(header) or 'none'}; "
                    f"separator {sep_name}); set --set data.{option}=NAME."
                )
        i_img = header.index(image_column)
        i_cap = header.index(caption_column)
        i_lab = header.index(label_column) if label_column else None
        rows: list[tuple[int, str, str, str | None]] = []  # (line number, image, caption, label)
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            line = reader.line_num

            def cell(i: int, row: list[str] = row) -> str:
                return row[i].strip() if i < len(row) else ""

            label = cell(i_lab) if i_lab is not None else None
            rows.append((line, cell(i_img), cell(i_cap), label or None))
        self.total = len(rows)
        self.rows = split.take(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        line, image, caption, label = self.rows[index]
        if not image:
            raise SkipItem(f"{self.path}:{line}: empty image path")
        path = Path(image).expanduser()
        if not path.is_absolute():
            path = self.root / path
        caption = _check_caption(caption, path)
        return Sample(image=load_image(path), caption=caption, label=label, captions=[caption])

    def describe(self) -> str:
        return f"csv {self.path} (split {self.split}: {_fmt(len(self))} of {_fmt(self.total)} rows)"


def _delimiter(text: str, separator: str) -> str:
    aliases = {"auto": None, "tab": "\t", "\\t": "\t", "\t": "\t", "comma": ",", ",": ",", ";": ";", "|": "|"}
    if separator not in aliases:
        raise DataError(f"unknown CSV separator {separator!r}; use auto, tab, comma, ';' or '|' (--set data.separator=tab).")
    chosen = aliases[separator]
    if chosen is not None:
        return chosen
    header = next((ln for ln in text.splitlines() if ln.strip()), "")
    if "\t" in header:
        return "\t"  # open_clip's default; a tab in a header is never part of a column name
    if "," in header:
        return ","
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",\t;|").delimiter
    except csv.Error:
        return "\t"  # a single-column file: the column check below names what was found


# --------------------------------------------------------------------------- coco
class CocoDataset:
    """A COCO captions file (``captions_*.json``): one item per image with all its captions."""

    name = "coco"

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path | None = None,
        split: str | Split = "all",
    ) -> None:
        split = Split.of(split)
        self.path = _require_file(annotations, "COCO annotation file", "path")
        self.split = split.name
        self.root = self._image_root(images)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{self.path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                "expected a COCO captions file (captions_*.json)."
            ) from None
        except UnicodeDecodeError:
            raise DataError(f"{self.path}: not a text file; expected a COCO captions file (captions_*.json).") from None
        except OSError as exc:
            raise DataError(f"cannot read {self.path}: {exc.strerror}.") from None
        entries = self._parse(data)
        self.total = len(entries)
        self.entries = split.take(entries)
        self.explicit_root = images is not None

    def _image_root(self, images: str | Path | None) -> Path:
        if images is not None:
            root = Path(images).expanduser()
            if not root.is_dir():
                raise DataError(f"COCO image folder not found: {root} (set --set data.images=DIR).")
            return root
        here = self.path.parent
        m = re.search(r"(train|val|test)(\d{4})", self.path.stem)
        if m:  # captions_val2017.json -> val2017/ beside the file or beside its folder (COCO layout)
            for candidate in (here / m.group(0), here.parent / m.group(0)):
                if candidate.is_dir():
                    return candidate
        return here

    def _parse(self, data: object) -> list[tuple[int, str, list[str]]]:
        where = f"{self.path}: not a COCO captions file"
        if not isinstance(data, dict):
            raise DataError(f"{where}: top level is a JSON {type(data).__name__}, expected an object with 'images' and 'annotations'.")
        for key in ("images", "annotations"):
            if key not in data:
                raise DataError(f"{where}: missing key {key!r} (found: {', '.join(map(str, data)) or 'none'}).")
            if not isinstance(data[key], list):
                raise DataError(f"{where}: {key!r} is a JSON {type(data[key]).__name__}, expected a list.")
        order: list[tuple[int, str]] = []
        captions: dict[int, list[str]] = {}
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
                raise DataError(f"{where}: images[{i}] has no 'id' and 'file_name' (got {_short(img)}).")
            if img["id"] in captions:
                raise DataError(f"{where}: image id {img['id']!r} appears twice in 'images'.")
            order.append((img["id"], img["file_name"]))
            captions[img["id"]] = []
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
                raise DataError(
                    f"{where}: annotations[{i}] has no 'image_id' and 'caption' (got {_short(ann)}); "
                    "instances_*.json and person_keypoints_*.json are not caption files."
                )
            text = ann["caption"]
            if not isinstance(text, str):
                raise DataError(f"{where}: annotations[{i}].caption is a {type(text).__name__}, expected a string.")
            if ann["image_id"] in captions and text.strip():
                captions[ann["image_id"]].append(" ".join(text.split()))
        return [(image_id, file_name, captions[image_id]) for image_id, file_name in order]

    def __len__(self) -> int:
        return len(self.entries)

    def image_id(self, index: int) -> Any:
        """The COCO image id of an item (COCO-format caption results)."""
        return self.entries[index][0]

    def __getitem__(self, index: int) -> Sample:
        image_id, file_name, captions = self.entries[index]
        path = self.root / file_name
        if not captions:
            raise SkipItem(f"{path}: empty caption (image id {image_id} has no caption)")
        if not path.exists():  # the usual cause is the folder, not the image: say where images are looked for
            where = "in" if self.explicit_root else f"beside {self.path.name}, in"
            raise SkipItem(f"{path}: missing file (COCO images are looked for {where} {self.root}; "
                           "point --set data.images=DIR at the image folder)")
        return Sample(image=load_image(path), caption=captions[0], label=None, captions=list(captions))

    def describe(self) -> str:
        return f"coco {self.path} (images in {self.root}; split {self.split}: {_fmt(len(self))} of {_fmt(self.total)} images)"


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- folder
class FolderDataset:
    """A folder of images with same-name ``.txt`` captions (``cat.jpg`` + ``cat.txt``).

    An image without its ``.txt`` is kept as an item that is skipped and counted. The label of an
    image in a subfolder is that subfolder's path relative to the root (``animals/cats``).
    """

    name = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str | Split = "all",
        recursive: bool = True,
        captions: str = "txt",
    ) -> None:
        split = Split.of(split)
        self.root = Path(root).expanduser()
        self.split = split.name
        if captions not in ("txt", "label"):
            raise DataError(f"data.captions must be 'txt' (same-name .txt files) or 'label' (the class folder name), got {captions!r}.")
        self.captions = captions
        if not self.root.exists():
            raise DataError(f"image folder not found: {self.root} (check the path or set --set data.path=DIR).")
        if not self.root.is_dir():
            raise DataError(f"not a folder: {self.root} (point --set data.path=DIR at a folder of images and .txt captions).")
        pattern = "**/*" if recursive else "*"
        files = sorted(
            (p for p in self.root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        self.total = len(files)
        self.all_files = files
        self.files = split.take(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        if self.captions == "label":  # an ImageFolder of class subfolders (zero-shot): the class is the caption
            label = self._label(path)
            if label is None:
                raise SkipItem(f"{path}: not in a class subfolder (data.captions=label)")
            return Sample(image=load_image(path), caption=label.rsplit("/", 1)[-1].replace("_", " "), label=label)
        txt = path.with_suffix(".txt")
        if not txt.is_file():
            raise SkipItem(f"{path}: no caption file {txt.name}")
        try:
            caption = txt.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise SkipItem(f"{txt}: unreadable caption file ({type(exc).__name__})") from None
        caption = _check_caption(" ".join(caption.split()), path)
        parent = path.parent.relative_to(self.root).as_posix()
        label = parent if parent != "." else None
        return Sample(image=load_image(path), caption=caption, label=label, captions=[caption])

    def _label(self, path: Path) -> str | None:
        parent = path.parent.relative_to(self.root).as_posix()
        return parent if parent != "." else None

    def classes(self) -> list[str]:
        """Every class (subfolder label) of the folder, all splits, sorted: class index order for zero-shot."""
        return sorted({lab for p in self.all_files if (lab := self._label(p)) is not None})

    def describe(self) -> str:
        return f"folder {self.root} (split {self.split}: {_fmt(len(self))} of {_fmt(self.total)} images)"


# --------------------------------------------------------------------------- karpathy
class KarpathyDataset:
    """A Karpathy split file (``dataset_coco.json``, ``dataset_flickr30k.json``): one item per image of the
    chosen split with all its sentences -- the COCO 5k / Flickr30k 1k retrieval test sets.

    ``{"images": [{"filename", "filepath"?, "split": "train|val|test|restval", "sentences": [{"raw"}],
    "cocoid"|"imgid"?}]}``; an image is ``images/filepath/filename`` (``filepath`` as given, e.g. ``val2014``).
    Split ``all`` is every image, ``train`` includes ``restval``.
    """

    name = "karpathy"

    def __init__(self, annotations: str | Path, images: str | Path | None = None, split: str = "test") -> None:
        self.path = _require_file(annotations, "Karpathy split file", "path")
        if split not in ("all", "train", "val", "test", "restval"):
            raise DataError(f"unknown split {split!r} for a Karpathy split file; valid splits: all, train, val, test, restval.")
        self.split = split
        self.root = Path(images).expanduser() if images is not None else self.path.parent
        if not self.root.is_dir():
            raise DataError(f"Karpathy image folder not found: {self.root} (set --set data.images=DIR).")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                            "expected a Karpathy split file (dataset_coco.json).") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {self.path}: {type(exc).__name__}.") from None
        where = f"{self.path}: not a Karpathy split file"
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"{where}: expected an object with an 'images' list.")
        wanted = {"train": ("train", "restval")}.get(split, (split,))
        self.entries: list[tuple[Any, str, list[str]]] = []
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict) or not isinstance(img.get("filename"), str) or not isinstance(img.get("sentences"), list):
                raise DataError(f"{where}: images[{i}] has no 'filename' and 'sentences' (got {_short(img)}).")
            if split != "all" and img.get("split") not in wanted:
                continue
            caps = [" ".join(str(s.get("raw", "")).split()) for s in img["sentences"] if isinstance(s, dict)]
            rel = f"{img['filepath']}/{img['filename']}" if img.get("filepath") else img["filename"]
            image_id = img.get("cocoid", img.get("imgid", i))
            self.entries.append((image_id, rel, [c for c in caps if c]))
        self.total = len(data["images"])

    def __len__(self) -> int:
        return len(self.entries)

    def image_id(self, index: int) -> Any:
        """The COCO id (``cocoid``) or Flickr ``imgid`` of an item, for COCO-format results."""
        return self.entries[index][0]

    def __getitem__(self, index: int) -> Sample:
        _, rel, captions = self.entries[index]
        path = self.root / rel
        if not captions:
            raise SkipItem(f"{path}: empty caption (no sentences)")
        return Sample(image=load_image(path), caption=captions[0], label=None, captions=list(captions))

    def describe(self) -> str:
        return (f"karpathy {self.path} (images in {self.root}; split {self.split}: "
                f"{_fmt(len(self))} of {_fmt(self.total)} images)")
