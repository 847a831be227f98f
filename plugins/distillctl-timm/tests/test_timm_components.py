"""The timm plugin's components against distillctl's conformance kit (distillctl.testing) and their own rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from distillctl_timm import image_folder, shapes_labels
from distillctl_timm.family import TimmFamily
from distillctl_timm.models import BUNDLED_CONFIG, BUNDLED_FILE, build_model
from distillctl_timm.splitter import TimmSplitter, even_split

from distillctl import testing
from distillctl.errors import DataError, DistillctlError, WeightsError
from distillctl.plugins import registry

from .conftest import CONVNEXT_OPTIONS


def _teacher(name: str = "timm-shapes-vit", **options):
    return registry("teacher").create(name, device="cpu", **options)


def test_every_component_is_registered() -> None:
    for kind, name in [("teacher", "timm-shapes-vit"), ("teacher", "timm:vit_tiny_patch16_224"), ("student", "timm-model"),
                       ("splitter", "timm"), ("family", "timm"), ("dataset", "shapes-labels"), ("dataset", "image-folder"),
                       ("evaluator", "accuracy")]:
        entry = registry(kind).get(name)
        assert entry.provenance.distribution == "distillctl-timm", (kind, name)
    assert "layer-subset" in registry("student")  # the built-in generic student serves timm teachers


def test_bundled_teacher_is_small_and_fp16() -> None:
    from safetensors import safe_open

    assert BUNDLED_FILE.is_file() and BUNDLED_FILE.stat().st_size < 5 * 2**20
    with safe_open(str(BUNDLED_FILE), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118


def test_datasets_follow_the_contract(tmp_path: Path) -> None:
    ds = testing.check_dataset(shapes_labels)
    assert ds[0].label in BUNDLED_CONFIG["classes"] and ds[0].image.size == (32, 32)
    assert shapes_labels(split="test")[3].image.tobytes() == shapes_labels(split="test")[3].image.tobytes()  # deterministic
    for c in ("cat", "dog"):  # ImageFolder layout, one broken file
        (tmp_path / c).mkdir()
        for i in range(5):
            shapes_labels(split="val")[i].image.save(tmp_path / c / f"{i}.png")
    (tmp_path / "dog" / "0.png").write_bytes(b"not a png")
    testing.check_dataset(image_folder, path=str(tmp_path), skipped=[3])  # train split: cat 0-2, dog 0-2 (val, test: one each)
    assert {image_folder(path=str(tmp_path), split=s)[0].label for s in ("train", "test")} == {"cat"}
    with pytest.raises(DataError, match="data.path"):
        image_folder()


def test_vit_block_groups_and_layer_subset() -> None:
    teacher = _teacher()
    splitter = TimmSplitter()
    assert [(m.name, m.stacks[0].start, m.depth) for m in splitter.modules(teacher.model)] == [
        ("early", 0, 2), ("middle", 2, 2), ("late", 4, 2)]
    student = registry("student").create("layer-subset", teacher=teacher, splitter=splitter, depths={"middle": 1})
    assert [(m.name, m.stacks[0].start, m.depth) for m in splitter.modules(student.model)] == [
        ("early", 0, 2), ("middle", 2, 1), ("late", 3, 2)]
    assert student.model_config["block_groups"] == [2, 1, 2] and len(student.model.blocks) == 5
    # the kept block is a copy of the teacher's last block of the group (blocks.3 -> student blocks.2)
    assert torch.equal(student.model.blocks[2].mlp.fc1.weight, teacher.model.blocks[3].mlp.fc1.weight)
    assert even_split(7, 3) == [3, 2, 2]
    with pytest.raises(DistillctlError, match="every group needs at least one block"):
        TimmSplitter(["a", "b", "c", "d", "e", "f", "g"]).modules(teacher.model)
    two = TimmSplitter(["lower", "upper"])  # another grouping of the same teacher: an even split
    assert [m.depth for m in two.modules(teacher.model)] == [3, 3]
    half = registry("student").create("layer-subset", teacher=teacher, splitter=two, depths={"lower": 1, "upper": 2})
    assert [m.depth for m in two.modules(half.model)] == [1, 2]


def test_family_and_triple_contracts(tmp_path: Path) -> None:
    family = TimmFamily()
    data = shapes_labels(split="val")
    teacher = _teacher()
    testing.check_family(family, teacher, dataset=data, splitter=TimmSplitter(), tmp_dir=tmp_path)
    testing.check_triple("timm-shapes-vit", "layer-subset", "timm", family, student_options={"ratio": 0.5}, dataset=data)
    metrics = testing.check_evaluator("accuracy", family, teacher, data, teacher=teacher, samples=16)
    assert 0 <= metrics["top1"] <= 1


def test_hierarchical_model_stages_and_students() -> None:
    family, splitter = TimmFamily(), TimmSplitter()
    teacher = _teacher("timm:convnext_atto", weights="random", **CONVNEXT_OPTIONS)
    mods = splitter.modules(teacher.model)
    assert [(m.name, m.stacks[0].name, m.depth) for m in mods] == [
        ("stage0", "stages.0.blocks", 2), ("stage1", "stages.1.blocks", 2), ("stage2", "stages.2.blocks", 2), ("stage3", "stages.3.blocks", 2)]
    sub = registry("student").create("layer-subset", teacher=teacher, splitter=splitter, ratio=0.5)
    assert sub.model_config["kwargs"]["depths"] == [1, 1, 1, 1]
    splitter.check_compatible(teacher.model, sub.model)
    narrow = registry("student").create("timm-model", teacher=teacher, splitter=splitter, model="convnext_atto",
                                        kwargs={"depths": [1, 1, 1, 1], "dims": [8, 16, 16, 24]})
    splitter.check_compatible(teacher.model, narrow.model)  # widths differ: the engine projects
    x = torch.zeros(2, 3, 32, 32)
    assert narrow.model(x).shape == (2, 5)
    vit = registry("student").create("timm-model", teacher=_teacher(), splitter=splitter, model="vit_tiny_patch16_224",
                                      kwargs={"patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2})
    with pytest.raises(DistillctlError, match="do not match the teacher's"):
        splitter.check_compatible(teacher.model, vit.model)  # ConvNeXt stages vs ViT groups
    bad = registry("student").create("timm-model", teacher=_teacher(), splitter=splitter, model="vit_tiny_patch16_224",
                                      kwargs={"patch_size": 4, "embed_dim": 32, "depth": 3, "num_heads": 2})
    with pytest.raises(DistillctlError, match="same token grid"):
        splitter.check_compatible(_teacher().model, bad.model)
    assert family.with_depths(teacher.model_config, {"stage1": 1})["kwargs"]["depths"] == [2, 1, 2, 2]


def test_labels_map_to_classes_and_unlabelled_data_is_kd_only() -> None:
    family, teacher = TimmFamily(), _teacher()
    images = torch.zeros(3, 3, 32, 32)
    out = family.forward(teacher.model, {"image": images, "labels": ["star", None, "circle"]})
    assert out["targets"].tolist() == [4, -100, 0]
    none = family.forward(teacher.model, {"image": images, "labels": [None] * 3})
    assert float(family.task_loss(none, {})["ce"]) == 0.0
    with pytest.raises(DataError, match="label 'cat' is not one of the teacher's 5 classes"):
        family.forward(teacher.model, {"image": images, "labels": ["cat", None, None]})


def test_teacher_weights_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        _teacher("timm:vit_tiny_patch16_224", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="not in the HF cache and HF_HUB_OFFLINE is set"):
        _teacher("timm:vit_tiny_patch16_224", weights="augreg_in21k_ft_in1k")
    with pytest.raises(WeightsError, match="no pretrained tag"):
        _teacher("timm:vit_tiny_patch16_224", weights="no_such_tag")
    with pytest.raises(DistillctlError, match="unknown timm model 'vit_tiny_patch16_22'"):
        _teacher("timm:vit_tiny_patch16_22")
    # a file of another model is one line naming the keys
    torch.save(build_model({"model_name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "depth": 2, "num_classes": 5}}).state_dict(),
               tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="do not fit"):
        _teacher("timm:vit_tiny_patch16_224", weights=str(tmp_path / "other.pt"), img_size=32, num_classes=5)
    ok = _teacher("timm:vit_tiny_patch16_224", weights=str(tmp_path / "other.pt"), img_size=32, num_classes=5,
                  model_kwargs={"depth": 2})
    assert ok.weights == str(tmp_path / "other.pt") and ok.preprocess_config["input_size"] == [3, 32, 32]
