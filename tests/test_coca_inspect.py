"""``distillctl inspect`` through the real Typer app (meta-device models, no weights read)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distillctl.cli import app


def _run(*args: str):
    return CliRunner().invoke(app, ["inspect", *args])


def _json(*args: str) -> dict:
    result = _run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_inspect_coca_large_numbers_offline(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))  # nothing cached: still answers
    doc = _json("--teacher", "coca-large")  # its wall time: tests/benchmarks/bench_fail_fast.py
    t = doc["teacher"]
    assert t["built_on"] == "meta" and t["params"] == 638_450_177
    mods = {m["name"]: m for m in t["modules"]}
    assert [(m["tower"], m["layers"], m["width"]) for m in mods.values()] == [
        ("visual", 24, 1024),
        ("text", 12, 768),
        ("text_decoder", 12, 768),
    ]
    assert round(mods["vision"]["params"] / 1e6, 2) == 306.72
    assert round(mods["text"]["params"] / 1e6, 2) == 123.65
    assert round(mods["multimodal"]["params"] / 1e6, 2) == 208.07
    assert round(mods["vision"]["block_params"] / 1e6, 2) == 302.31
    assert t["other_params"] == 1  # logit_scale
    stacks = {s["name"]: s for m in t["modules"] for s in m["stacks"]}
    assert stacks["visual.transformer.resblocks"]["tokens"] == 257
    assert stacks["text.transformer.resblocks"]["tokens"] == 77
    assert stacks["text_decoder.cross_attn"]["tokens"] == 75 and stacks["text_decoder.cross_attn"]["kv_tokens"] == 255
    mem = doc["memory"]
    assert mem["batch_size"] == 32 and mem["complete"]
    p = 638_450_177
    assert mem["fp32"]["weights"] == 8 * p and mem["fp32"]["optimizer"] == 8 * p
    assert mem["bf16"]["weights"] == 6 * p and mem["bf16"]["activations"] < mem["fp32"]["activations"]
    assert doc["student"] is None and doc["projections"] == []


def test_inspect_layer_subset_ratio_and_table() -> None:
    doc = _json("--teacher", "coca-large", "--student", "layer-subset", "--set", "student.ratio=0.5", "--batch-size", "8")
    s = doc["student"]
    assert s["options"] == {"ratio": 0.5}
    assert [m["layers"] for m in s["modules"]] == [12, 6, 6]
    assert doc["layer_map"]["vision"]["visual.transformer.resblocks"] == list(range(1, 24, 2))
    assert doc["layer_map"]["multimodal"]["text_decoder.cross_attn"] == [1, 3, 5, 7, 9, 11]
    blocks = {m["name"]: m["block_params"] for m in doc["teacher"]["modules"]}
    s_blocks = {m["name"]: m["block_params"] for m in s["modules"]}
    assert all(s_blocks[k] * 2 == blocks[k] for k in blocks)  # half of identical blocks
    assert doc["compression"]["params"] == round(s["params"] / 638_450_177, 4) and 0.5 < doc["compression"]["params"] < 0.6
    assert doc["memory"]["batch_size"] == 8 and doc["projections"] == []

    table = _run("--teacher", "coca-large", "--student", "layer-subset", "--set", "student.vision=12")
    assert table.exit_code == 0, table.output
    assert "638.45M" in table.stdout and "306.72M" in table.stdout and "24 x 1024" in table.stdout
    assert "12 x 1024" in table.stdout and "estimated training memory" in table.stdout


def test_inspect_auto_names_the_teachers_family_and_splitter() -> None:
    # `auto` (the config default) is what the teacher's bundle names, as in `distill`
    auto = _json("--teacher", "clip-tiny", "--set", "splitter.name=auto", "--set", "family.name=auto")
    plain = _json("--teacher", "clip-tiny")
    assert [m["name"] for m in auto["teacher"]["modules"]] == [m["name"] for m in plain["teacher"]["modules"]] == ["vision", "text"]


def test_inspect_config_student_lists_projections(tmp_path) -> None:
    student_cfg = tmp_path / "s.json"
    from distillctl.coca.models import builtin_model_config

    cfg = builtin_model_config("coca_ViT-B-32")
    cfg["vision_cfg"].update(layers=6, width=384, patch_size=32)
    cfg["embed_dim"] = cfg["text_cfg"]["width"] = cfg["multimodal_cfg"]["width"] = 256
    cfg["text_cfg"]["layers"] = cfg["multimodal_cfg"]["layers"] = 4
    student_cfg.write_text(json.dumps(cfg))
    doc = _json("--teacher", "coca-base", "--student", "config", "--set", f"student.config={json.dumps(str(student_cfg))}")
    proj = {p["student_layer"]: p for p in doc["projections"]}
    assert len(proj) == 6 + 4 + 4 + 4
    assert proj["visual.transformer.resblocks.0"]["linear"] == [384, 768]
    assert proj["visual.transformer.resblocks.0"]["teacher_layer"] == "visual.transformer.resblocks.1"
    assert proj["text_decoder.cross_attn.3"]["linear"] == [256, 512] and proj["text_decoder.cross_attn.3"]["params"] == 256 * 512 + 512


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "coca-large", "--student", "layer-subset", "--set", "student.vision=30"],
         "student vision depth 30 exceeds the teacher's 24 layers"),
        (["--teacher", "coca-large", "--student", "layer-subset", "--set", "student.depth=3"],
         "student.depth: unknown option for student 'layer-subset'"),
        (["--teacher", "coca-huge"], "unknown teacher 'coca-huge'"),
        (["--teacher", "coca-base", "--set", "train.lr=1"], "inspect reads only teacher.*"),
    ],
)
def test_inspect_errors_are_one_line(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.output + result.stderr
