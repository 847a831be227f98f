"""The ``timm-model`` student: any timm model name, random init, paired with the teacher module by module.

The student inherits the teacher's ``num_classes`` and class names (and, for ViTs, ``img_size``, so the
token grids match); ``kwargs`` adds or overrides ``timm.create_model`` arguments (``embed_dim``,
``depth``, ``depths``, ``dims``...). Widths may differ from the teacher's: the engine learns a
projection per paired layer. Student layer ``i`` of a module pairs with the last teacher layer of
the ``i``-th uniform block of that module (the engine's default layer map).
"""

from __future__ import annotations

from typing import Any

from distillctl.errors import DistillctlError
from distillctl.interfaces import Student, Teacher


def timm_model_student(teacher: Teacher, splitter: Any, *, model: str = "", kwargs: dict[str, Any] | None = None) -> Student:
    from distillctl.torch_utils import model_device
    from distillctl_timm.models import build_model, normalize_config

    if not model:
        raise DistillctlError("student.model is required for the timm-model student (a timm model name, e.g. "
                              "--set student.model=vit_tiny_patch16_224).")
    t_cfg = normalize_config(teacher.model_config)
    args: dict[str, Any] = {"num_classes": int(getattr(teacher.model, "num_classes", 0) or t_cfg["kwargs"].get("num_classes", 0))}
    if "img_size" in t_cfg["kwargs"]:  # ViT-style students take the teacher's image size (same token grid)
        args["img_size"] = t_cfg["kwargs"]["img_size"]
    cfg = normalize_config({"model_name": model, "kwargs": {**args, **(kwargs or {})}, "classes": t_cfg["classes"]})
    if t_cfg["img_size"] and "img_size" not in cfg["kwargs"]:
        cfg["img_size"] = t_cfg["img_size"]  # the teacher's input size, for models that take none as an argument
    if cfg["model_name"] == t_cfg["model_name"] and t_cfg.get("block_groups") and "depth" not in (kwargs or {}):
        cfg["block_groups"] = t_cfg["block_groups"]
    try:
        net = build_model(cfg, model_device(teacher.model))
    except DistillctlError:
        if "img_size" not in args or "img_size" in (kwargs or {}):
            raise
        cfg["img_size"] = cfg["kwargs"].pop("img_size")  # a model without an image-size argument (ConvNeXt, ResNet...)
        net = build_model(cfg, model_device(teacher.model))
    net.train()
    params = sum(p.numel() for p in net.parameters())
    return Student(model=net, model_config=cfg, layer_map={}, description=f"timm {model} ({params / 1e6:.2f}M params, random init)")
