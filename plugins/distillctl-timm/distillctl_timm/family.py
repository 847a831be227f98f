"""The ``timm`` family: timm image classifiers (any ``timm.create_model`` name).

* inputs: the images; the batch's label strings stay strings until the forward, which maps them to
  class indices through the model's class list (``distillctl_classes``, from the model config's
  ``classes``; kept in ``Teacher.extra["classes"]`` and in the export metadata). A label that is an
  integer string (``"3"``) is taken as an index when the model has no class names.
* task loss: cross-entropy over the labelled samples of the batch; a sample without a label
  (``Sample.label is None``) adds nothing, so unlabelled data is distilled from the teacher only
  (KD + layerwise terms; the ``ce`` term is then 0).
* distillation terms: logit KL at the run's temperature (``loss.temperature``), scaled by T².
* layerwise terms: generic, over the ``timm`` splitter's layers (blocks of ViT groups, stage blocks).
* evaluation: ``accuracy`` (top-1 / top-5, teacher-student top-1 agreement) and ``efficiency``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from distillctl.errors import DataError, DistillctlError
from distillctl.interfaces import Teacher

IGNORE = -100  # target of an unlabelled sample: cross-entropy skips it


def label_targets(model: torch.nn.Module, labels: list[str | None], device: Any) -> torch.Tensor:
    """``[B]`` class indices of ``labels`` for ``model`` (``IGNORE`` for a missing label)."""
    classes = getattr(model, "distillctl_classes", None)
    index = {c: i for i, c in enumerate(classes)} if classes else None
    n = int(getattr(model, "num_classes", 0) or 0)
    out = []
    for label in labels:
        if label is None:
            out.append(IGNORE)
        elif index is not None and label in index:
            out.append(index[label])
        elif index is None and str(label).isdigit() and int(label) < n:
            out.append(int(label))
        else:
            known = f"one of the teacher's {len(classes)} classes ({', '.join(list(classes)[:8])}{'...' if len(classes) > 8 else ''})" \
                if classes else f"a class index below {n} (the teacher has no class names: set teacher.classes)"
            raise DataError(f"label {label!r} is not {known}.")
    return torch.tensor(out, dtype=torch.long, device=device)


class TimmFamily:
    """timm image classifiers: task = cross-entropy on labels; KD = logit KL (temperature)."""

    name = "timm"
    evaluators: tuple[str, ...] = ("accuracy", "efficiency")

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
            raise DistillctlError(f"family.label_smoothing must be a number in [0, 1), got {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)

    # ------------------------------------------------------------------ training
    def inputs(self, batch: Any, device: Any) -> dict[str, Any]:
        return {"image": batch.images.to(device, non_blocking=True),  # [B, 3, H, W]
                "labels": list(batch.labels)}  # strings (or None), mapped per model in forward

    def forward(self, model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        logits = model(inputs["image"])  # [B, C]
        return {"logits": logits, "targets": label_targets(model, inputs["labels"], logits.device)}

    def task_loss(self, outputs: dict[str, Any], inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits, targets = outputs["logits"], outputs["targets"]
        if not bool((targets != IGNORE).any()):  # no labelled sample: distillation only
            return {"ce": logits.sum() * 0.0}
        return {"ce": F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, label_smoothing=self.label_smoothing)}

    def kd_terms(self, student_out: dict[str, Any], teacher_out: dict[str, Any], inputs: dict[str, Any], *,
                 temperature: float) -> dict[str, torch.Tensor]:
        t = float(temperature)
        s_logp = F.log_softmax(student_out["logits"].float() / t, dim=-1)  # [B, C]
        t_logp = F.log_softmax(teacher_out["logits"].float() / t, dim=-1)
        return {"logit_kl": F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean") * t * t}

    def position_mask(self, module: str, inputs: dict[str, Any]) -> torch.Tensor | None:
        return None  # images have no padding: every token / pixel position counts

    # ------------------------------------------------------------------ models
    def build(self, model_config: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
        from distillctl_timm.models import build_model

        return build_model(model_config, device)

    def with_depths(self, model_config: dict[str, Any], depths: dict[str, int]) -> dict[str, Any]:
        """Plain ViTs: ``kwargs.depth`` and ``block_groups`` (module order); staged models: ``kwargs.depths``."""
        from distillctl_timm.models import build_model, normalize_config
        from distillctl_timm.splitter import TimmSplitter, is_plain

        cfg = normalize_config(model_config)
        groups = cfg["block_groups"] if cfg["block_groups"] and len(cfg["block_groups"]) == len(depths) else None
        probe = build_model({**cfg, "block_groups": groups}, "meta")  # architecture only (meta): names and depths
        modules = TimmSplitter(tuple(depths) if is_plain(probe) else ("early", "middle", "late")).modules(probe)
        names = [m.name for m in modules]
        unknown = sorted(set(depths) - set(names))
        if unknown:
            raise DistillctlError(f"unknown timm module(s) {', '.join(unknown)} (valid: {', '.join(names)}).")
        new = [int(depths.get(m.name, m.depth)) for m in modules]
        if is_plain(probe):
            cfg["kwargs"]["depth"] = sum(new)
            cfg["block_groups"] = new
        else:
            cfg["kwargs"]["depths"] = new
        return cfg

    def dummy_inputs(self, bundle: Teacher, batch_size: int, device: Any) -> dict[str, Any]:
        from distillctl_timm.splitter import input_size

        c, h, w = input_size(bundle.model)
        return {"image": torch.zeros(batch_size, c, h, w, device=device), "labels": [None] * batch_size}

    def class_logits(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(images)  # [N, C]

    # ------------------------------------------------------------------ export / load
    def export(self, model: torch.nn.Module, out_dir: Path, *, model_config: dict[str, Any], source: Teacher,
               metadata: dict[str, str], dtype: str) -> dict[str, Any]:
        from distillctl.export import atomic_write_text, save_weights

        classes = list(model_config.get("classes") or source.extra.get("classes") or [])
        cfg = {**model_config, "classes": classes or None}
        sizes = save_weights(model, Path(out_dir) / "student.safetensors", dtype=dtype, metadata={
            **metadata, "family": self.name, "model_config": json.dumps(cfg),
            "preprocess_config": json.dumps(source.preprocess_config), "classes": json.dumps(classes),
        })
        # timm's own config layout (``config.json`` as timm.create_model(pretrained_cfg_overlay=...) reads it)
        atomic_write_text(Path(out_dir) / "config.json", json.dumps({
            "architecture": cfg["model_name"], "model_args": cfg["kwargs"], "num_classes": int(getattr(model, "num_classes", 0)),
            "label_names": classes or None, "pretrained_cfg": {k: v for k, v in source.preprocess_config.items() if k != "type"},
            "distillctl": {"teacher": source.name, "block_groups": cfg.get("block_groups")}}, indent=2))
        return sizes

    def load(self, path: Path, device: str = "cpu") -> Teacher:
        from distillctl.export import read_export
        from distillctl_timm.models import build_model, load_state_into, make_transform

        state, meta, cfg = read_export(path)
        model = build_model(cfg)
        load_state_into(model, state, str(path))
        preprocess = json.loads(meta.get("preprocess_config", "{}"))
        return Teacher(name=str(path), model=model.to(device).eval().requires_grad_(False), tokenizer=None,
                       transform=make_transform(preprocess), model_config=cfg, preprocess_config=preprocess,
                       weights=str(path), weights_hash="", splitter="timm", family=self.name,
                       extra={"classes": list(cfg.get("classes") or [])})
