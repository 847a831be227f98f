"""File data sources, the batch loader, skip counting and the early data checks.

Fixtures are real image files written with PIL into tmp_path; the loader is the real DataLoader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillctl.data import SkipItem
from distillctl.data.files import CocoDataset, CsvDataset, FolderDataset, Split, split_range
from distillctl.data.loader import (
    Batch,
    BatchSampler,
    SkipCounter,
    check_batch_size,
    check_usable,
    make_loader,
)
from distillctl.errors import DataError
from distillctl.interfaces import Dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------- helpers
class TinyTokenizer:
    """Characters -> ids, padded with 0 to context_length (a real, trivial tokenizer)."""

    context_length = 8
    vocab_size = 256
    sot_token_id = 1
    eot_token_id = 2

    def __call__(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.sot_token_id] + [3 + (ord(c) % 250) for c in t][: self.context_length - 2] + [self.eot_token_id]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids):
        return "".join(chr(i - 3) for i in ids if i >= 3)


def to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.resize((32, 32))).copy()).permute(2, 0, 1).float() / 255


def write_image(path: Path, colour=(200, 30, 30), size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)  # noise: a JPEG that is not tiny
    arr[..., 0] = colour[0]
    Image.fromarray(arr).save(path)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    write_image(path, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def load_all(dataset: Dataset, batch_size: int, workers: int = 0, transform=to_tensor):
    """At least one pass over the dataset in order through the real loader: (batches, counter).

    Every batch is full, so the last one wraps around to the first items when batch_size does not
    divide len(dataset); count distinct indices (``good``) rather than batch lengths.
    """
    steps = -(-len(dataset) // batch_size)
    sampler = BatchSampler(len(dataset), batch_size, seed=0, shuffle=False, steps=steps)
    counter = SkipCounter()
    batches = []
    for batch in make_loader(dataset, transform, TinyTokenizer(), sampler, workers=workers):
        counter.add(batch.skipped)
        batches.append(batch)
    return batches, counter


def good(batches: list[Batch]) -> list[int]:
    return sorted({i for b in batches for i in b.indices})


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.fixture
def mixed_csv(tmp_path: Path) -> Path:
    """4 good rows, then a truncated JPEG, a missing file, an empty caption and a directory."""
    write_image(tmp_path / "img" / "a.jpg")
    write_image(tmp_path / "img" / "b.png")
    write_image(tmp_path / "img" / "c.jpg")
    write_image(tmp_path / "abs.jpg")
    write_truncated_jpeg(tmp_path / "img" / "broken.jpg")
    (tmp_path / "img" / "adir.jpg").mkdir()
    rows = [
        ("img/a.jpg", "a red square", "red"),
        ("img/b.png", "a picture, with a comma", "red"),
        ("img/c.jpg", "third", ""),
        (str(tmp_path / "abs.jpg"), "absolute path", "blue"),
        ("img/broken.jpg", "truncated", "x"),
        ("img/nothere.jpg", "missing", "x"),
        ("img/a.jpg", "   ", "x"),
        ("img/adir.jpg", "a directory", "x"),
    ]
    path = tmp_path / "train.csv"
    import csv as _csv

    with path.open("w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["filepath", "title", "label"])
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- csv
def test_csv_comma_relative_and_absolute_paths(mixed_csv: Path):
    ds = CsvDataset(mixed_csv, label_column="label")
    assert isinstance(ds, Dataset)
    assert len(ds) == 8 and ds.name == "csv"
    s = ds[1]
    assert s.caption == "a picture, with a comma"  # quoted comma survives
    assert s.image.mode == "RGB" and s.image.size == (40, 30)
    assert s.captions == [s.caption] and s.label == "red"
    assert ds[2].label is None  # empty label cell
    assert ds[3].caption == "absolute path"
    assert "8 of 8 rows" in ds.describe()


def test_csv_tab_separated_open_clip_defaults(tmp_path: Path):
    write_image(tmp_path / "x" / "one.jpg")
    write_image(tmp_path / "x" / "two.jpg")
    (tmp_path / "data.tsv").write_text("filepath\ttitle\nx/one.jpg\tfirst, with comma\nx/two.jpg\tsecond\n")
    ds = CsvDataset(tmp_path / "data.tsv")
    assert [ds[i].caption for i in range(len(ds))] == ["first, with comma", "second"]
    ds2 = CsvDataset(tmp_path / "data.tsv", separator="tab")
    assert ds2[1].caption == "second"


def test_csv_skips_bad_items_with_reasons(mixed_csv: Path):
    ds = CsvDataset(mixed_csv)
    reasons = {}
    for i in range(4, 8):
        with pytest.raises(SkipItem) as exc:
            ds[i]
        reasons[i] = exc.value.reason
    assert "broken.jpg: unreadable image" in reasons[4] and "truncated" in reasons[4]
    assert reasons[5].endswith("nothere.jpg: missing file")
    assert reasons[6].endswith("a.jpg: empty caption")
    assert "adir.jpg: is a directory" in reasons[7]


def test_csv_missing_column_names_columns_and_option(tmp_path: Path):
    (tmp_path / "d.csv").write_text("image,caption\na.jpg,hello\n")
    with pytest.raises(DataError) as exc:
        CsvDataset(tmp_path / "d.csv")
    msg = one_line(exc)
    assert "no column 'filepath'" in msg and "columns found: image, caption" in msg
    assert "--set data.image_column=" in msg
    with pytest.raises(DataError) as exc:
        CsvDataset(tmp_path / "d.csv", image_column="image")
    assert "no column 'title'" in one_line(exc) and "data.caption_column" in str(exc.value)
    ds = CsvDataset(tmp_path / "d.csv", image_column="image", caption_column="caption")
    assert len(ds) == 1


def test_missing_source_paths_raise_dataerror(tmp_path: Path):
    for make, option in (
        (lambda: CsvDataset(tmp_path / "nope.csv"), "data.path"),
        (lambda: CocoDataset(tmp_path / "captions_nope.json"), "data.path"),
        (lambda: FolderDataset(tmp_path / "nodir"), "data.path"),
    ):
        with pytest.raises(DataError) as exc:
            make()
        msg = one_line(exc)
        assert "not found" in msg and ("nope" in msg or "nodir" in msg)
        assert option in msg


# --------------------------------------------------------------------------- coco
def write_coco(root: Path, name="captions_val2017.json", images_dir="val2017") -> Path:
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    write_image(root / images_dir / "000001.jpg")
    write_image(root / images_dir / "000002.jpg")
    write_image(root / images_dir / "000003.jpg")
    data = {
        "info": {},
        "images": [
            {"id": 1, "file_name": "000001.jpg"},
            {"id": 2, "file_name": "000002.jpg"},
            {"id": 3, "file_name": "000003.jpg"},
            {"id": 4, "file_name": "000004.jpg"},  # missing on disk
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A dog on grass."},
            {"id": 11, "image_id": 2, "caption": "A cat."},
            {"id": 12, "image_id": 1, "caption": "  A   brown dog\nrunning. "},
            {"id": 13, "image_id": 1, "caption": "Grass and a dog."},
            {"id": 14, "image_id": 4, "caption": "Not on disk."},
        ],
    }
    path = ann_dir / name
    path.write_text(json.dumps(data))
    return path


def test_coco_keeps_every_caption_and_finds_image_folder(tmp_path: Path):
    ds = CocoDataset(write_coco(tmp_path))
    assert ds.root == tmp_path / "val2017"  # COCO layout: annotations/ beside val2017/
    assert len(ds) == 4
    s = ds[0]
    assert s.captions == ["A dog on grass.", "A brown dog running.", "Grass and a dog."]
    assert s.caption == "A dog on grass." and s.label is None
    assert ds[1].captions == ["A cat."]
    with pytest.raises(SkipItem, match="no caption"):
        ds[2]  # image 3 has no caption
    with pytest.raises(SkipItem, match="missing file"):
        ds[3]


def test_coco_explicit_images_and_default_root(tmp_path: Path):
    ann = write_coco(tmp_path, name="captions_mine.json", images_dir="pics")
    ds = CocoDataset(ann)
    assert ds.root == ann.parent  # no split in the name: the annotation file's folder
    with pytest.raises(SkipItem, match="missing file"):
        ds[0]
    ds = CocoDataset(ann, images=tmp_path / "pics")
    assert ds[0].caption == "A dog on grass."
    with pytest.raises(DataError, match="data.images"):
        CocoDataset(ann, images=tmp_path / "nope")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "top level is a JSON list"),
        ('{"images": [], "categories": []}', "missing key 'annotations'"),
        ('{"images": {}, "annotations": []}', "'images' is a JSON dict, expected a list"),
        ('{"images": [{"id": 1}], "annotations": []}', "images[0] has no 'id' and 'file_name'"),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]}',
            "annotations[0] has no 'image_id' and 'caption'",
        ),
    ],
)
def test_coco_not_coco_is_one_clear_line(tmp_path: Path, content: str, expected: str):
    path = tmp_path / "captions_x.json"
    path.write_text(content)
    with pytest.raises(DataError) as exc:
        CocoDataset(path)
    msg = one_line(exc)
    assert expected in msg and str(path) in msg


# --------------------------------------------------------------------------- folder
def test_folder_captions_labels_and_skips(tmp_path: Path):
    root = tmp_path / "imgs"
    write_image(root / "top.jpg")
    (root / "top.txt").write_text("a top-level image\n")
    write_image(root / "cats" / "c1.png")
    (root / "cats" / "c1.txt").write_text("a  cat")
    write_image(root / "cats" / "nocap.jpg")  # no .txt: skipped and counted
    write_image(root / "dogs" / "deep" / "d1.webp")
    (root / "dogs" / "deep" / "d1.txt").write_text("a dog")
    write_image(root / "dogs" / "empty.jpg")
    (root / "dogs" / "empty.txt").write_text("  \n")
    (root / "notes.md").write_text("not an image")
    ds = FolderDataset(root)
    names = [p.relative_to(root).as_posix() for p in ds.files]
    assert names == ["cats/c1.png", "cats/nocap.jpg", "dogs/deep/d1.webp", "dogs/empty.jpg", "top.jpg"]
    assert ds[0].caption == "a cat" and ds[0].label == "cats"
    assert ds[2].label == "dogs/deep"
    assert ds[4].label is None and ds[4].caption == "a top-level image"
    batches, counter = load_all(ds, batch_size=2)
    assert good(batches) == [0, 2, 4]
    assert counter.count == 2
    assert "nocap.jpg: no caption file nocap.txt" in counter.summary()
    assert len(FolderDataset(root, recursive=False)) == 1


# --------------------------------------------------------------------------- splits
def test_split_partition_is_deterministic_and_disjoint():
    n = 100
    train, val, test = (split_range(n, s, 0.1, 0.05) for s in ("train", "val", "test"))
    assert list(train) + list(val) + list(test) == list(range(n))
    assert (len(train), len(val), len(test)) == (85, 10, 5)
    assert test[-1] == n - 1  # test is the tail
    small = [len(split_range(3, s, 0.05, 0.05)) for s in ("train", "val", "test")]
    assert small == [1, 1, 1]  # at least one each when n >= 3
    assert len(split_range(2, "test", 0.05, 0.05)) == 0
    assert len(split_range(10, "val", 0.0, 0.1)) == 0  # a zero fraction means none
    with pytest.raises(DataError, match="valid splits: all, train, val, test"):
        split_range(10, "hard")


@pytest.mark.parametrize("source", ["csv", "coco", "folder"])
def test_file_sources_share_one_split_definition(source: str, mixed_csv: Path, tmp_path: Path) -> None:
    from distillctl.plugins import load_plugins

    entry = load_plugins(include_entry_points=False).registry("dataset").get(source)
    options, types = entry.options(), entry.option_types()
    assert options["split"] == "train" and options["val_fraction"] == options["test_fraction"] == 0.05
    assert types["val_fraction"] is float and types["test_fraction"] is float and types["split"] is str
    assert entry.check_option("test_fraction", "a lot") == "expected number, got str 'a lot'"
    with pytest.raises(DataError, match=r"data.val_fraction must be a number in \[0, 1\), got 1.5"):
        entry.factory(path=str(tmp_path / "not-read-yet"), val_fraction=1.5)  # before any file is looked at
    if source == "csv":
        ds = entry.factory(path=str(mixed_csv), split="test", val_fraction=0.25, test_fraction=0.25)
        assert len(ds) == 2 and ds.split == "test"


def test_file_source_split(mixed_csv: Path):
    train = CsvDataset(mixed_csv, split=Split("train", val_fraction=0.25, test_fraction=0.25))
    test = CsvDataset(mixed_csv, split=Split("test", val_fraction=0.25, test_fraction=0.25))
    assert len(train) == 4 and len(test) == 2
    assert train[0].caption == "a red square"
    assert "split test: 2 of 8 rows" in test.describe()
    with pytest.raises(DataError, match="unknown split 'dev'"):
        CsvDataset(mixed_csv, split="dev")


# --------------------------------------------------------------------------- loader
def test_loader_skips_and_counts_through_real_loader(mixed_csv: Path):
    ds = CsvDataset(mixed_csv, label_column="label")
    batches, counter = load_all(ds, batch_size=4)
    assert [len(b) for b in batches] == [4, 0]  # the second step had only bad items
    first = batches[0]
    assert isinstance(first, Batch)
    assert first.images.shape == (4, 3, 32, 32) and first.images.dtype == torch.float32
    assert first.text.shape == (4, 8) and first.text.dtype == torch.long
    assert first.captions[0] == "a red square" and first.labels[:3] == ["red", "red", None]
    assert first.indices == [0, 1, 2, 3] and first.skipped == []
    assert [i for i, _ in batches[1].skipped] == [4, 5, 6, 7]
    assert batches[1].images.shape[0] == 0 and batches[1].text.shape == (0, 8)
    assert counter.count == 4
    assert counter.summary() == f"skipped 4 images (first: {counter.first})"
    assert "broken.jpg: unreadable image" in counter.summary()


def test_loader_with_worker_processes(mixed_csv: Path):
    ds = CsvDataset(mixed_csv)
    batches, counter = load_all(ds, batch_size=3, workers=1, transform=to_tensor)
    assert good(batches) == [0, 1, 2, 3] and counter.count == 4
    assert batches[0].text[0, 0].item() == TinyTokenizer.sot_token_id


def test_skip_counter_counts_distinct_items_and_round_trips():
    c = SkipCounter()
    assert c.summary() is None and c.count == 0 and c.first is None
    c.add([(3, "a.jpg: missing file")])
    assert c.summary() == "skipped 1 image (first: a.jpg: missing file)"
    c.add([(3, "a.jpg: missing file"), (7, "b.jpg: empty caption")])  # index 3 again (next epoch)
    assert c.count == 2 and c.first == "a.jpg: missing file"
    d = SkipCounter()
    d.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert d.summary() == c.summary() == "skipped 2 images (first: a.jpg: missing file)"


# --------------------------------------------------------------------------- sampler
def test_batch_sampler_deterministic_epochs_and_resume():
    a = list(BatchSampler(10, 4, seed=3, steps=12))
    assert a == list(BatchSampler(10, 4, seed=3, steps=12))  # same seed, same stream
    assert a != list(BatchSampler(10, 4, seed=4, steps=12))
    assert all(len(b) == 4 for b in a)
    stream = [i for b in a for i in b]
    for epoch in range(4):  # 48 positions = 4 full epochs of 10 + 8
        assert sorted(stream[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a new permutation each epoch
    for k in (0, 1, 5, 11, 12):
        tail = list(BatchSampler(10, 4, seed=3, start_step=k, steps=12))
        assert tail == a[k:]
    assert len(BatchSampler(10, 4, seed=3, start_step=5, steps=12)) == 7
    endless = iter(BatchSampler(10, 4, seed=3, start_step=7))
    assert [next(endless) for _ in range(5)] == a[7:12]


def test_batch_sampler_sequential():
    assert list(BatchSampler(5, 2, seed=0, shuffle=False, steps=4)) == [[0, 1], [2, 3], [4, 0], [1, 2]]
    assert BatchSampler(5, 2, seed=9, shuffle=False).indices(10) == [0, 1]


def test_resumed_loader_sees_the_same_batches(mixed_csv: Path):
    ds = CsvDataset(mixed_csv)
    full = [b.indices + [i for i, _ in b.skipped] for b in make_loader(ds, to_tensor, TinyTokenizer(), BatchSampler(8, 3, 1, steps=6))]
    tail = [
        b.indices + [i for i, _ in b.skipped]
        for b in make_loader(ds, to_tensor, TinyTokenizer(), BatchSampler(8, 3, 1, start_step=4, steps=6))
    ]
    assert tail == full[4:]


# --------------------------------------------------------------------------- early checks
def test_empty_source_fails_early(tmp_path: Path):
    (tmp_path / "empty.csv").write_text("filepath,title\n")
    ds = CsvDataset(tmp_path / "empty.csv")
    with pytest.raises(DataError) as exc:
        check_usable(ds)
    msg = one_line(exc)
    assert "empty.csv" in msg and "no items" in msg
    (tmp_path / "imgs").mkdir()
    with pytest.raises(DataError, match="no items"):
        check_usable(FolderDataset(tmp_path / "imgs"))
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        CsvDataset(tmp_path / "blank.csv")


def test_all_bad_source_fails_early(tmp_path: Path):
    write_truncated_jpeg(tmp_path / "t.jpg")
    (tmp_path / "bad.csv").write_text("filepath,title\nt.jpg,truncated\nmissing.jpg,missing\n")
    ds = CsvDataset(tmp_path / "bad.csv")
    with pytest.raises(DataError) as exc:
        check_usable(ds)
    msg = one_line(exc)
    assert str(tmp_path / "bad.csv") in msg and "all 2 skipped" in msg and "t.jpg: unreadable image" in msg


def test_usable_source_passes(mixed_csv: Path):
    check_usable(CsvDataset(mixed_csv))  # returns at the first good row
    late = mixed_csv.parent / "late.csv"
    late.write_text("filepath,title\nimg/broken.jpg,bad\nimg/nothere.jpg,missing\nimg/c.jpg,good\n")
    check_usable(CsvDataset(late))  # bad rows first, a good one later: usable


def test_batch_size_larger_than_dataset(mixed_csv: Path):
    ds = CsvDataset(mixed_csv)
    check_batch_size(ds, 8)
    with pytest.raises(DataError) as exc:
        check_batch_size(ds, 9)
    msg = one_line(exc)
    assert "batch size 9" in msg and "8 items" in msg and "--batch-size" in msg


# --------------------------------------------------------------------------- registration
def test_datasets_are_registered_with_options(mixed_csv: Path, tmp_path: Path):
    from distillctl.plugins import load_plugins

    reg = load_plugins(include_entry_points=False).registry("dataset")
    assert {"shapes", "csv", "coco", "folder"} <= set(reg.names())
    opts = reg.get("csv").options()
    assert opts["path"] is None and opts["caption_column"] == "title" and "split" in opts
    assert set(reg.get("coco").options()) >= {"path", "images", "split"}
    assert reg.get("folder").summary.startswith("Folder of images")
    ds = reg.create("csv", path=str(mixed_csv), split="all")
    assert len(ds) == 8
    with pytest.raises(DataError) as exc:
        reg.create("csv", split="train")
    assert one_line(exc) == "data.path is required for the csv source (--set data.path=FILE)."
    with pytest.raises(DataError, match="data.path is required for the folder source"):
        reg.create("folder")


def test_shapes_factory_passes_options():
    from distillctl.plugins import load_plugins

    reg = load_plugins(include_entry_points=False).registry("dataset")
    ds = reg.create("shapes", split="val", image_size=32, seed=1, length=5)
    assert len(ds) == 5 and ds.name == "shapes"
    assert ds[0].image.size == (32, 32)
    assert len(reg.create("shapes", split="val")) > 5  # length 0 = the split's default size
