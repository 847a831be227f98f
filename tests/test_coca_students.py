"""Students: ``layer-subset`` (weights copied, strict load) and ``config`` (any CoCa cfg, projections)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from distillctl.coca.models import random_teacher, tiny_config
from distillctl.coca.splitter import CocaSplitter, layer_width
from distillctl.errors import ConfigError, DistillctlError
from distillctl.layerwise import build_projections, layer_pairs
from distillctl.plugins import registry

VOCAB = 64


class Tok:
    context_length, vocab_size, sot_token_id, eot_token_id = 32, VOCAB, 1, 2

    def __call__(self, texts):  # pragma: no cover - not used here
        raise NotImplementedError

    def decode(self, ids):  # pragma: no cover
        return ""


@pytest.fixture(scope="module")
def teacher():
    return random_teacher(tiny_config(vision_layers=6, vocab_size=VOCAB), seed=0, tokenizer=Tok(), name="tiny")


def _student(teacher, name: str, **options):
    return registry("student").create(name, teacher=teacher, splitter=CocaSplitter(), **options)


def test_layer_subset_copies_kept_layers_bit_identically(teacher, tmp_path: Path) -> None:
    student = _student(teacher, "layer-subset", vision=3, text=2, multimodal=1)
    assert student.layer_map == {
        "vision": {"visual.transformer.resblocks": [1, 3, 5]},
        "text": {"text.transformer.resblocks": [1, 3]},
        "multimodal": {"text_decoder.resblocks": [3], "text_decoder.cross_attn": [3]},
    }
    cfg = student.model_config
    assert (cfg["vision_cfg"]["layers"], cfg["text_cfg"]["layers"], cfg["multimodal_cfg"]["layers"]) == (3, 2, 1)
    assert teacher.model_config["vision_cfg"]["layers"] == 6  # the teacher's cfg is untouched
    tsd, ssd = teacher.model.state_dict(), student.model.state_dict()
    for stack, module in (("visual.transformer.resblocks", "vision"), ("text.transformer.resblocks", "text"),
                          ("text_decoder.resblocks", "multimodal"), ("text_decoder.cross_attn", "multimodal")):
        for i, t_idx in enumerate(student.layer_map[module][stack]):
            keys = [k for k in ssd if k.startswith(f"{stack}.{i}.")]
            assert keys
            for k in keys:
                assert torch.equal(ssd[k], tsd[k.replace(f"{stack}.{i}.", f"{stack}.{t_idx}.")]), k
    for k in ("text.token_embedding.weight", "visual.attn_pool.query", "text_decoder.text_projection", "logit_scale"):
        assert torch.equal(ssd[k], tsd[k])
    # the student is its own (trainable) copy; open_clip rebuilds it from model_config and loads it strictly
    assert student.model.training and all(p.requires_grad for p in student.model.parameters())
    assert ssd["logit_scale"].data_ptr() != tsd["logit_scale"].data_ptr()
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": student.model_config}))
    save_file(ssd, str(folder / "open_clip_model.safetensors"))
    rebuilt = open_clip.create_model(f"local-dir:{folder}")
    for k, v in rebuilt.state_dict().items():
        assert torch.equal(v, ssd[k]), k


def test_layer_subset_ratio_explicit_layers_and_defaults(teacher) -> None:
    half = _student(teacher, "layer-subset", ratio=0.5)
    assert half.layer_map["vision"]["visual.transformer.resblocks"] == [1, 3, 5]
    assert half.layer_map["multimodal"]["text_decoder.cross_attn"] == [1, 3]
    full = _student(teacher, "layer-subset")
    assert full.layer_map["text"]["text.transformer.resblocks"] == [0, 1, 2, 3]
    tiny = _student(teacher, "layer-subset", ratio=0.1)  # round(6*0.1)=1, at least 1 everywhere
    assert tiny.model_config["text_cfg"]["layers"] == 1
    explicit = _student(teacher, "layer-subset", layers={"vision": [0, 4], "multimodal": [2]})
    assert explicit.layer_map["vision"]["visual.transformer.resblocks"] == [0, 4]
    assert explicit.layer_map["multimodal"] == {"text_decoder.resblocks": [2], "text_decoder.cross_attn": [2]}
    assert torch.equal(explicit.model.state_dict()["visual.transformer.resblocks.1.mlp.c_fc.weight"],
                       teacher.model.state_dict()["visual.transformer.resblocks.4.mlp.c_fc.weight"])


def test_layer_subset_refuses_deeper_students_and_bad_layers(teacher) -> None:
    with pytest.raises(DistillctlError) as exc:
        _student(teacher, "layer-subset", vision=8)
    msg = str(exc.value)
    assert "vision depth 8 exceeds the teacher's 6 layers" in msg and "student.depths.vision to at most 6" in msg
    with pytest.raises(DistillctlError, match="strictly increasing"):
        _student(teacher, "layer-subset", layers={"text": [2, 1]})
    with pytest.raises(DistillctlError, match=r"0\.\.5"):
        _student(teacher, "layer-subset", layers={"vision": [6]})
    with pytest.raises(DistillctlError, match="unknown module"):
        _student(teacher, "layer-subset", layers={"audio": [0]})
    with pytest.raises(DistillctlError, match="ratio"):
        _student(teacher, "layer-subset", ratio=1.5)


def test_config_student_with_other_widths_gets_projections(teacher, tmp_path: Path) -> None:
    cfg = tiny_config(vision_layers=2, text_layers=2, decoder_layers=2, vision_width=48, embed_dim=32, vocab_size=VOCAB)
    path = tmp_path / "student.json"
    path.write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    student = _student(teacher, "config", config=str(path))
    assert student.model_config == cfg
    assert student.layer_map["vision"] == {"visual.transformer.resblocks": [2, 5]}
    assert student.layer_map["multimodal"] == {"text_decoder.resblocks": [1, 3], "text_decoder.cross_attn": [1, 3]}
    # the decoder projection is initialised (open_clip leaves it torch.empty)
    proj_w = student.model.text_decoder.text_projection
    assert proj_w.abs().sum() > 0 and abs(proj_w.std().item() - 32**-0.5) < 0.05
    splitter = CocaSplitter()
    pairs = layer_pairs(splitter.modules(teacher.model), splitter.modules(student.model), student.layer_map)
    widths = {sp: (layer_width(student.model, sp), layer_width(teacher.model, tp)) for ps in pairs.values() for sp, tp in ps}
    proj = build_projections(widths)
    shapes = {k: tuple(v.weight.shape) for k, v in proj.items()}
    assert shapes["visual__transformer__resblocks__0"] == (96, 48)
    assert shapes["text__transformer__resblocks__1"] == (64, 32)
    assert shapes["text_decoder__cross_attn__1"] == (64, 32)
    assert len(shapes) == 2 + 2 + 4


def test_config_student_partial_table_and_constraints(teacher) -> None:
    student = _student(teacher, "config", config={"multimodal_cfg": {"layers": 2}})
    assert student.model_config["multimodal_cfg"]["layers"] == 2
    assert student.model_config["multimodal_cfg"]["vocab_size"] == VOCAB  # the rest comes from the teacher
    with pytest.raises(ConfigError, match=r"text_cfg.width \(32\), multimodal_cfg.width \(64\) and embed_dim \(64\)"):
        _student(teacher, "config", config={"text_cfg": {"width": 32}})
    with pytest.raises(DistillctlError, match="only same-grid students"):
        _student(teacher, "config", config={"vision_cfg": {"patch_size": 8}})
    with pytest.raises(DistillctlError, match="text depth 5 exceeds the teacher's 4"):
        _student(teacher, "config", config={"text_cfg": {"layers": 5}})
    with pytest.raises(DistillctlError, match="needs student.config"):
        _student(teacher, "config")
    with pytest.raises(DistillctlError, match="no such JSON file"):
        _student(teacher, "config", config="nope")


def test_meta_teacher_gives_meta_student() -> None:
    teacher = registry("teacher").create("coca-base", device="meta")
    student = _student(teacher, "layer-subset", ratio=0.5)
    assert next(student.model.parameters()).device.type == "meta"
    assert student.model_config["vision_cfg"]["layers"] == 6
    n = sum(p.numel() for p in student.model.parameters())
    assert 100e6 < n < 253_560_065
