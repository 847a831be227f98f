"""The ``clip`` family end to end: open_clip CLIP teachers, students, export that open_clip loads.

Real random-init open_clip CLIP models (no download): the built-in ``clip-tiny`` teacher (3.9M params,
64 px), tiny configs written to JSON for ``open-clip:CONFIG.json``, a timm-tower CLIP, and (slow)
``open-clip:ViT-B-32`` with random weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from distillctl.cli import app

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(autouse=True)
def _builtin_plugins_only() -> Any:
    from distillctl import plugins

    plugins.reset_plugins(plugins.load_plugins(include_entry_points=False))
    yield
    plugins.reset_plugins(None)


@pytest.fixture(scope="module")
def clip_smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``distillctl distill --preset clip-smoke`` through the CLI (retrieval eval on 100 test items)."""
    from distillctl import plugins

    plugins.reset_plugins(plugins.load_plugins(include_entry_points=False))
    out = tmp_path_factory.mktemp("clip") / "run"
    try:
        res = invoke("distill", "--preset", "clip-smoke", "--out", str(out), "--quiet")
    finally:
        plugins.reset_plugins(None)
    assert res.exit_code == 0, res.output
    return out


def _tiny_batch(tokenizer: Any, n: int = 4, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    captions = ["a red circle", "two blue squares on the left", "a green triangle", "a small yellow star"][:n]
    return {"image": torch.randn(n, 3, size, size, generator=g), "text": tokenizer(captions)}


# --------------------------------------------------------------------------- the smoke preset via the CLI
def test_clip_smoke_writes_student_and_open_clip_config(clip_smoke: Path) -> None:
    for name in ("student.safetensors", "open_clip_config.json", "report.json", "run.toml"):
        assert (clip_smoke / name).is_file(), name
    report = json.loads((clip_smoke / "report.json").read_text())
    assert report["family"] == "clip" and report["steps"] == 6
    assert sorted({e["arm"] for e in report["episodes"]}) == ["text", "vision"]
    assert report["sizes"]["student_params"] < report["sizes"]["teacher_params"]
    assert {"i2t_r1", "t2i_r1"} <= set(report["eval"]["student"])
    assert "tf_token_acc" not in report["eval"]["student"]  # no caption logits in CLIP: skipped, not failed
    cfg = json.loads((clip_smoke / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["vision_cfg"]["layers"] == 2 and cfg["model_cfg"]["text_cfg"]["layers"] == 2
    assert "multimodal_cfg" not in cfg["model_cfg"] and cfg["preprocess_cfg"]["size"] == 64


def test_clip_export_loads_in_open_clip_local_dir(clip_smoke: Path) -> None:
    import open_clip

    from distillctl.export import load_student

    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_smoke}")
    assert type(loaded).__name__ == "CLIP"
    bundle, meta = load_student(clip_smoke)
    assert meta["family"] == "clip" and bundle.family == "clip" and bundle.splitter == "clip"
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clip_smoke}")
    assert tokenizer.context_length == bundle.tokenizer.context_length == 32
    from distillctl.data.shapes import ShapesDataset

    ds = ShapesDataset("test")
    images = torch.stack([preprocess(ds[i].image) for i in range(4)])
    torch.testing.assert_close(images, torch.stack([bundle.transform(ds[i].image) for i in range(4)]))
    text = tokenizer([ds[i].caption for i in range(4)])
    loaded.eval()
    with torch.no_grad():
        a_img, a_txt = loaded.encode_image(images, normalize=True), loaded.encode_text(text, normalize=True)
        b_img, b_txt = bundle.model.encode_image(images, normalize=True), bundle.model.encode_text(text, normalize=True)
    torch.testing.assert_close(a_img, b_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(a_txt, b_txt, atol=1e-5, rtol=0)


def test_eval_scores_a_clip_student(clip_smoke: Path) -> None:
    res = invoke("eval", str(clip_smoke), "--samples", "50", "--no-teacher", "--json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert 0.0 <= out["student"]["i2t_r1"] <= 1.0 and "tf_token_acc" not in out["student"]


# --------------------------------------------------------------------------- family unit tests
@pytest.fixture(scope="module")
def tiny() -> Any:
    from distillctl.clip.models import load_tiny_teacher

    return load_tiny_teacher()


def test_clip_tiny_is_seeded_and_leaves_the_global_rng_alone(tiny: Any) -> None:
    from distillctl.clip.models import load_tiny_teacher

    state = torch.random.get_rng_state()
    again = load_tiny_teacher()
    assert torch.equal(state, torch.random.get_rng_state())
    assert again.weights_hash == tiny.weights_hash and tiny.family == "clip" and tiny.splitter == "clip"
    assert not any(p.requires_grad for p in tiny.model.parameters()) and not tiny.model.training


def test_task_loss_equals_open_clip_clip_loss(tiny: Any) -> None:
    from open_clip.loss import ClipLoss

    from distillctl.clip.family import ClipFamily

    fam = ClipFamily()
    inputs = _tiny_batch(tiny.tokenizer)
    with torch.no_grad():
        out = fam.forward(tiny.model, inputs)
        terms = fam.task_loss(out, inputs)
        img, txt, scale = tiny.model(inputs["image"], inputs["text"]).values()
    assert set(terms) == {"contrastive"}
    torch.testing.assert_close(terms["contrastive"], ClipLoss()(img, txt, scale))
    logits = scale * img @ txt.T  # by hand: (CE(I->T) + CE(T->I)) / 2
    target = torch.arange(4)
    by_hand = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(terms["contrastive"], by_hand)


def test_siglip_style_bias_uses_the_sigmoid_loss() -> None:
    from open_clip.loss import SigLipLoss

    from distillctl.clip.family import ClipFamily
    from distillctl.clip.models import random_clip_teacher, tiny_config

    t = random_clip_teacher({**tiny_config(vision_layers=1, text_layers=1), "init_logit_bias": -10.0}, seed=0)
    fam = ClipFamily()
    inputs = _tiny_batch(t.tokenizer)
    with torch.no_grad():
        out = fam.forward(t.model, inputs)
        terms = fam.task_loss(out, inputs)
    assert set(terms) == {"sigmoid"}
    expected = SigLipLoss()(out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"])
    torch.testing.assert_close(terms["sigmoid"], expected)


def test_kd_terms_are_zero_when_the_student_is_the_teacher(tiny: Any) -> None:
    from distillctl.clip.family import ClipFamily

    fam = ClipFamily()
    inputs = _tiny_batch(tiny.tokenizer)
    with torch.no_grad():
        out = fam.forward(tiny.model, inputs)
    terms = fam.kd_terms(out, out, inputs, temperature=2.0)
    assert set(terms) == {"contrastive_kl", "image_cos", "text_cos"}
    for k, v in terms.items():
        assert abs(float(v)) < 1e-6, k
    # a different student gives positive terms; different embed dims drop the embedding terms only
    shuffled = {**out, "image_features": out["image_features"].flip(0)}
    moved = fam.kd_terms(shuffled, out, inputs, temperature=2.0)
    assert float(moved["contrastive_kl"]) > 0 and float(moved["image_cos"]) > 0 and abs(float(moved["text_cos"])) < 1e-6
    narrow = {**out, "image_features": out["image_features"][:, :32], "text_features": out["text_features"][:, :32]}
    assert set(fam.kd_terms(narrow, out, inputs, temperature=2.0)) == {"contrastive_kl"}


def _hooked_shapes(model: torch.nn.Module, fam: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Size]:
    from distillctl.clip.splitter import ClipSplitter
    from distillctl.layerwise import HiddenStateTap

    modules = ClipSplitter().modules(model)
    paths = {m.name: m.stacks[0].layer(0) for m in modules}
    with torch.no_grad(), HiddenStateTap(model, paths.values()) as tap:
        fam.forward(model, inputs)
    return {name: tap.outputs[p].shape for name, p in paths.items()}


def test_position_masks_match_hooked_hidden_states(tiny: Any) -> None:
    from distillctl.clip.family import ClipFamily
    from distillctl.clip.models import random_clip_teacher, tiny_config

    fam = ClipFamily()
    inputs = _tiny_batch(tiny.tokenizer)
    shapes = _hooked_shapes(tiny.model, fam, inputs)
    assert fam.position_mask("vision", inputs) is None and shapes["vision"] == (4, 1 + 4 * 4, 96)
    mask = fam.position_mask("text", inputs)
    assert mask.shape == shapes["text"][:2] == (4, 32)  # CLIP: no CLS, L positions
    assert torch.equal(mask, inputs["text"] != 0) and int(mask[0].sum()) == 5  # <sot> a red circle <eot>
    # CustomTextCLIP with embed_cls: the text tower lives under text. and appends a CLS (L + 1)
    cfg = tiny_config(vision_layers=1, text_layers=1)
    cfg["custom_text"] = True
    cfg["text_cfg"].update(embed_cls=True, pool_type="last")
    custom = random_clip_teacher(cfg, seed=0)
    assert type(custom.model).__name__ == "CustomTextCLIP"
    fam2 = ClipFamily()
    shapes = _hooked_shapes(custom.model, fam2, inputs)
    mask = fam2.position_mask("text", inputs)
    assert mask.shape == shapes["text"][:2] == (4, 33) and bool(mask[:, -1].all())


def test_layer_subset_student_and_incompatible_grids(tiny: Any) -> None:
    from distillctl.clip.family import ClipFamily
    from distillctl.clip.models import build_clip, tiny_config
    from distillctl.clip.splitter import ClipSplitter
    from distillctl.errors import DistillctlError
    from distillctl.students import layer_subset_student

    fam, splitter = ClipFamily(), ClipSplitter()
    student = layer_subset_student(tiny, splitter, family=fam, ratio=0.5)
    assert student.layer_map == {"vision": {"visual.transformer.resblocks": [1, 3]},
                                 "text": {"transformer.resblocks": [1, 3]}}
    sd, td = student.model.state_dict(), tiny.model.state_dict()
    assert torch.equal(sd["transformer.resblocks.0.mlp.c_fc.weight"], td["transformer.resblocks.1.mlp.c_fc.weight"])
    assert torch.equal(sd["token_embedding.weight"], td["token_embedding.weight"])
    other = build_clip(tiny_config(patch_size=8), "meta")
    with pytest.raises(DistillctlError, match="vision tokens 65"):
        splitter.check_compatible(tiny.model, other)
    ctx = build_clip(tiny_config(context_length=16), "meta")
    with pytest.raises(DistillctlError, match="context length"):
        splitter.check_compatible(tiny.model, ctx)


def test_config_student_builds_a_narrower_clip(tiny: Any) -> None:
    from distillctl.clip.splitter import ClipSplitter
    from distillctl.default_plugins.students import config as config_student  # the built-in ``config`` student

    student = config_student(tiny, ClipSplitter(), config={"embed_dim": 32, "text_cfg": {"width": 32, "layers": 2},
                                                           "vision_cfg": {"width": 48, "head_width": 24, "layers": 2}})
    assert type(student.model).__name__ == "CLIP"
    assert student.model_config["embed_dim"] == 32 and "multimodal_cfg" not in student.model_config
    assert student.layer_map == {"vision": {"visual.transformer.resblocks": [1, 3]},
                                 "text": {"transformer.resblocks": [1, 3]}}


# --------------------------------------------------------------------------- open-clip: picks the family
def test_open_clip_teacher_picks_the_family_from_the_config(tmp_path: Path) -> None:
    from distillctl.clip.models import tiny_config
    from distillctl.coca.models import tiny_config as coca_tiny
    from distillctl.errors import DistillctlError
    from distillctl.plugins import registry

    (tmp_path / "clip.json").write_text(json.dumps(tiny_config()))
    (tmp_path / "coca.json").write_text(json.dumps(coca_tiny()))
    teachers = registry("teacher")
    clip_t = teachers.create(f"open-clip:{tmp_path / 'clip.json'}", weights="random")
    coca_t = teachers.create(f"open-clip:{tmp_path / 'coca.json'}", weights="random")
    assert (clip_t.family, clip_t.splitter, type(clip_t.model).__name__) == ("clip", "clip", "CLIP")
    assert (coca_t.family, coca_t.splitter, type(coca_t.model).__name__) == ("coca", "coca", "CoCa")
    b32 = teachers.create("open-clip:ViT-B-32", device="meta")  # architecture only: no weights read
    assert b32.family == "clip" and b32.tokenizer.context_length == 77
    assert sum(p.numel() for p in b32.model.parameters()) == 151_277_313
    with pytest.raises(DistillctlError, match="did you mean"):
        teachers.create("open-clip:ViT-B-31", weights="random")


def test_open_clip_tag_offline_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    res = invoke("distill", "--preset", "clip-smoke", "--teacher", "open-clip:ViT-B-32", "--teacher-weights",
                 "laion2b_s34b_b79k", "--out", str(tmp_path / "o"), "--quiet")
    assert res.exit_code != 0
    assert "laion2b_s34b_b79k" in res.output and "HF_HUB_OFFLINE" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_open_clip_preflight_knows_the_default_clip_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheap preflight (no torch) fails a missing default tag of ``open-clip:ViT-B-32`` offline."""
    from distillctl.config import preflight_teacher
    from distillctl.errors import WeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="laion2b_s34b_b79k.*CLIP-ViT-B-32-laion2B-s34B-b79K"):
        preflight_teacher({"teacher": {"name": "open-clip:ViT-B-32"}})
    preflight_teacher({"teacher": {"name": "open-clip:ViT-B-32", "weights": "random"}})  # nothing to fetch
    preflight_teacher({"teacher": {"name": f"open-clip:{tmp_path / 'cfg.json'}"}})  # unknown: the loader decides


def test_clip_presets_validate() -> None:
    for name in ("clip-smoke", "clip-b32-optima"):
        res = invoke("presets", "validate", name)
        assert res.exit_code == 0, res.output


# --------------------------------------------------------------------------- timm towers
TIMM_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                   "timm_pool": "token", "timm_proj": "linear"},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def test_timm_tower_modules_and_depth_limit() -> None:
    """A timm ViT tower (built on the meta device: no memory, no download): its blocks are the vision
    module; ``with_depths`` keeps its depth and says how."""
    from distillctl.clip.family import ClipFamily
    from distillctl.clip.models import build_clip
    from distillctl.clip.splitter import ClipSplitter, vision_tokens
    from distillctl.errors import DistillctlError

    model = build_clip(TIMM_CFG, "meta")
    modules = {m.name: m.stacks[0] for m in ClipSplitter().modules(model)}
    assert (modules["vision"].name, modules["vision"].depth) == ("visual.trunk.blocks", 12)
    assert (modules["text"].name, modules["text"].depth) == ("transformer.resblocks", 2)
    assert vision_tokens(model)[0] == 1 + 14 * 14
    fam = ClipFamily()
    assert fam.with_depths(TIMM_CFG, {"vision": 12, "text": 1})["text_cfg"]["layers"] == 1
    with pytest.raises(DistillctlError, match="student.depths.vision=12"):
        fam.with_depths(TIMM_CFG, {"vision": 6})


@pytest.mark.slow
def test_timm_tower_clip_distills_text_and_exports(tmp_path: Path) -> None:
    """A timm ViT tower: layerwise terms on ``visual.trunk.blocks``; its depth stays (open_clip passes none to timm)."""
    import open_clip

    cfg_path = tmp_path / "timm_clip.json"
    cfg_path.write_text(json.dumps(TIMM_CFG))
    common = ["distill", "--preset", "clip-smoke", "--teacher", f"open-clip:{cfg_path}", "--teacher-weights", "random",
              "--batch-size", "2", "--episodes", "2", "--episode-steps", "1", "--set", "eval.evaluators=[]", "--quiet"]
    res = invoke(*common, "--out", str(tmp_path / "refused"))
    assert res.exit_code != 0 and "student.depths.vision=12" in res.output, res.output
    out = tmp_path / "o"
    res = invoke(*common, "--set", "student.depths.vision=12", "--out", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["layer_pairs"]["vision"][0] == ["visual.trunk.blocks.0", "visual.trunk.blocks.0"]
    assert report["student"]["layer_map"]["text"] == {"transformer.resblocks": [1]}
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    assert type(loaded.visual).__name__ == "TimmModel" and len(loaded.transformer.resblocks) == 1


# --------------------------------------------------------------------------- full-size architecture (slow)
@pytest.mark.slow
def test_vit_b32_random_weights_runs_a_few_steps_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "b32"
    res = invoke("distill", "--teacher", "open-clip:ViT-B-32", "--teacher-weights", "random", "--data", "shapes",
                 "--batch-size", "2", "--episodes", "1", "--episode-steps", "2", "--set", "train.probe_batches=1",
                 "--set", "eval.evaluators=[]", "--out", str(out), "--quiet")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    # the bare command starts from the quickstart preset: module-local steps on a budget of 1 x 2 full steps' FLOPs
    c = report["compute"]
    assert report["family"] == "clip" and report["steps"] >= 2
    assert c["spent_flops"] >= c["budget_flops"] == 2 * c["full_step_flops"]
    assert report["teacher"]["params"] == 151_277_313
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"]["layers"] == 6
