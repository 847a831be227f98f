"""The quickstart teacher takes every ``--teacher-weights`` form the README documents."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distillctl.errors import WeightsError
from distillctl.quickstart import WEIGHTS_FILE, load_quickstart_teacher


def _same_weights(teacher: object) -> bool:
    bundled = load_file(str(WEIGHTS_FILE))
    own = teacher.model.state_dict()  # type: ignore[attr-defined]
    return all(torch.equal(own[k].float(), v.float()) for k, v in bundled.items())


@pytest.mark.parametrize("form", ["pt", "folder", "local-dir", "state_dict-pt"])
def test_quickstart_weights_forms(tmp_path: Path, form: str) -> None:
    sd = load_file(str(WEIGHTS_FILE))
    if form == "pt":
        spec = str(tmp_path / "w.pt")
        torch.save(sd, spec)
    elif form == "state_dict-pt":  # an open_clip training checkpoint
        spec = str(tmp_path / "epoch_1.pt")
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, spec)
    else:
        (tmp_path / "run").mkdir()
        shutil.copy(WEIGHTS_FILE, tmp_path / "run" / "open_clip_model.safetensors")
        spec = str(tmp_path / "run") if form == "folder" else f"local-dir:{tmp_path / 'run'}"
    teacher = load_quickstart_teacher(spec)
    assert _same_weights(teacher) and teacher.weights == spec and len(teacher.weights_hash) == 64


def test_quickstart_wrong_shapes_are_one_line_naming_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = load_file(str(WEIGHTS_FILE))
    sd["visual.class_embedding"] = sd["visual.class_embedding"][:64].contiguous()
    save_file(sd, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match=r"shape mismatch \(file vs model\): visual.class_embedding \[64\] vs \[128\]") as exc:
        load_quickstart_teacher(str(tmp_path / "w.safetensors"))
    assert "\n" not in str(exc.value)
