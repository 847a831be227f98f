"""The timm plugin through the real engine: presets, every policy and arm set, a ViT and a ConvNeXt.

Fast (default suite): a two-episode run of the bundled ViT and of a tiny random ConvNeXt, the
``timm-smoke`` preset through the CLI, export -> ``distillctl eval``. Slow (``-m slow``): ``timm-smoke``
with every registered policy x arm set (ViT and ConvNeXt), and the ``timm-quickstart`` acceptance run
(student keeps >= 90% of the teacher's top-1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distillctl import testing
from distillctl.cli import app
from distillctl.config import load_toml
from distillctl.plugins import registry

from .conftest import CONVNEXT_OPTIONS

PRESETS = Path(__file__).resolve().parent.parent / "distillctl_timm" / "presets"
ARM_SETS = ("single", "combinations", "all")
CONVNEXT = {"teacher": {"name": "timm:convnext_atto", "weights": "random", **CONVNEXT_OPTIONS}}


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"distillctl {' '.join(args)} failed:\n{result.output}"
    return result


def test_tiny_vit_distill_and_eval(tmp_path: Path) -> None:
    report = testing.run_tiny_distill(tmp_path / "vit", teacher="timm-shapes-vit", data="shapes-labels",
                                      config={"student": {"ratio": 0.5}, "eval": {"evaluators": ["accuracy", "efficiency"]}})
    assert report["family"] == "timm"
    assert [e["arm"] for e in report["episodes"]] and set(report["student"]["layer_pairs"]) == {"early", "middle", "late"}
    assert report["sizes"]["student_params"] < report["sizes"]["teacher_params"]
    student, teacher = report["eval"]["student"], report["eval"]["teacher"]
    assert 0 <= student["top1"] <= 1 and 0 <= student["agreement"] <= 1 and teacher["top1"] > 0.5
    assert "images_per_s" in student
    meta_cfg = json.loads((tmp_path / "vit" / "config.json").read_text())
    assert meta_cfg["label_names"] == ["circle", "square", "triangle", "diamond", "star"]
    # the export is rebuilt by the family (what `distillctl eval` does)
    from distillctl.export import load_student

    bundle, meta = load_student(tmp_path / "vit")
    assert meta["family"] == "timm" and bundle.extra["classes"][0] == "circle" and len(bundle.model.blocks) == 3


def test_tiny_convnext_distill(tmp_path: Path) -> None:
    report = testing.run_tiny_distill(tmp_path / "cnx", teacher="timm:convnext_atto", data="shapes-labels",
                                      config={**CONVNEXT, "student": {"ratio": 0.5}, "policy": {"arms": "all"}})
    assert set(report["student"]["layer_pairs"]) == {"stage0", "stage1", "stage2", "stage3"}
    assert report["episodes"][0]["arm"].count("+") == 3  # the one arm of "all": every stage


def test_smoke_preset_runs_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    _cli("distill", "--preset", str(PRESETS / "timm-smoke.toml"), "--out", str(out), "--quiet", "--set", "train.threads=1")
    report = json.loads((out / "report.json").read_text())
    assert report["family"] == "timm" and len(report["episodes"]) == 3 and "top1" in report["eval"]["student"]


def test_presets_validate_and_are_found_by_name() -> None:
    from distillctl import config, presets

    for path in sorted(PRESETS.glob("*.toml")):
        summary, command = presets.preset_header(path)
        assert summary and command.startswith(f"distillctl distill --preset {path.stem}")
        config.validate(load_toml(path), source=path.stem)  # the plugin's components are registered (conftest)
    if not presets.plugin_preset_dirs():  # the presets are found by name once the distribution is installed
        pytest.skip("distillctl-timm is not installed (pip install plugins/distillctl-timm)")
    for name in ("timm-quickstart", "timm-smoke"):
        assert presets.find_preset(name).name == f"{name}.toml"
        assert presets.preset_display_name(name, presets.find_preset(name)) == name
    listed = {p.name: p.provider for p in presets.list_presets(include_plugins=True)}
    assert listed["timm-smoke"].startswith("distillctl-timm ") and listed["smoke"] == "distillctl"


# ------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
@pytest.mark.parametrize("arms", ARM_SETS)
def test_smoke_with_every_policy_and_arm_set(tmp_path: Path, arms: str) -> None:
    smoke = load_toml(PRESETS / "timm-smoke.toml")
    for policy in registry("policy").names():
        for model, extra in (("vit", {}), ("convnext", CONVNEXT)):
            cfg = {**smoke, **extra, "policy": {"name": policy, "arms": arms},
                   "train": {**smoke["train"], "threads": 1, "device": "cpu"}, "eval": {"samples": 16}}
            report = testing.run_tiny_distill(tmp_path / f"{policy}-{model}", teacher=cfg["teacher"]["name"],
                                              data="shapes-labels", policy=policy, config=cfg)
            assert len(report["episodes"]) == smoke["train"]["episodes"], (policy, arms, model)


@pytest.mark.slow
def test_quickstart_student_keeps_90_percent_of_the_teachers_top1(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    _cli("distill", "--preset", str(PRESETS / "timm-quickstart.toml"), "--out", str(tmp_path / "qs"), "--quiet")
    seconds = time.perf_counter() - t0
    report = json.loads((tmp_path / "qs" / "report.json").read_text())
    s, t = report["eval"]["student"]["top1"], report["eval"]["teacher"]["top1"]
    print(f"timm-quickstart: teacher top-1 {t:.3f}, student top-1 {s:.3f} ({s / t:.1%} kept), "
          f"agreement {report['eval']['student']['agreement']:.3f}, {seconds:.0f} s")
    assert report["sizes"]["student_params"] < 0.6 * report["sizes"]["teacher_params"]
    assert s >= 0.9 * t, f"student top-1 {s:.3f} < 90% of the teacher's {t:.3f}"
