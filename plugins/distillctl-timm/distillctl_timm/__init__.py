"""distillctl-timm: timm image classifiers for distillctl (a first-party plugin, installed separately).

Registers, through the ``distillctl`` entry-point group (``timm = "distillctl_timm"``):

* family ``timm`` -- cross-entropy task loss on labels, logit-KL distillation, accuracy evaluation;
* teachers ``timm:<model-name>`` (weights: a cached timm/HF pretrained tag (default), a file, or ``random``) and
  ``timm-shapes-vit`` (the bundled tiny ViT, trained by ``python -m distillctl_timm.train``);
* student ``timm-model`` (any timm model name; the built-in ``layer-subset`` works on timm teachers too);
* splitter ``timm`` -- stages of hierarchical models, ``early/middle/late`` block groups of plain ViTs;
* datasets ``shapes-labels`` (procedural, offline) and ``image-folder`` (one sub-folder per class);
* evaluator ``accuracy``; presets ``timm-quickstart`` and ``timm-smoke`` (entry-point group
  ``distillctl.presets``).

Nothing heavy is imported here: factories import torch and timm when they are called.
"""

from __future__ import annotations

from typing import Any

from distillctl import hookimpl

__version__ = "0.1.0"


# ---------------------------------------------------------------------------------- teachers
def timm_teacher(variant: str, weights: str | None = None, device: str = "cpu", num_classes: int = 0,
                 classes: list | None = None, img_size: int = 0, model_kwargs: dict | None = None) -> Any:
    """Any timm classifier: timm:<model name>; weights = a cached pretrained tag (default: timm's), a file, or random."""
    from distillctl_timm.models import load_timm_teacher

    return load_timm_teacher(variant, weights=weights, device=device, num_classes=num_classes, classes=classes,
                             img_size=img_size, model_kwargs=model_kwargs)


def _timm_preflight(variant: str = "", weights: str | None = None, **_: Any) -> None:
    from distillctl_timm.models import preflight_timm_teacher

    preflight_timm_teacher(variant, weights)


timm_teacher.preflight = _timm_preflight  # type: ignore[attr-defined]


def shapes_vit(weights: str | None = None, device: str = "cpu") -> Any:
    """Bundled tiny timm ViT (6 blocks, 32 px) trained on shapes-labels: offline, seconds."""
    from distillctl_timm.models import load_bundled_teacher

    return load_bundled_teacher(weights=weights, device=device)


@hookimpl
def register_teachers(register: Any) -> None:
    register("timm:", timm_teacher)
    register("timm-shapes-vit", shapes_vit)


# ---------------------------------------------------------------------------------- students
def timm_model(teacher: Any, splitter: Any, model: str = "", kwargs: dict | None = None) -> Any:
    """Any timm model name as the student (random init; widths may differ, projections bridge them)."""
    from distillctl_timm.students import timm_model_student

    return timm_model_student(teacher, splitter, model=model, kwargs=kwargs)


@hookimpl
def register_students(register: Any) -> None:
    register("timm-model", timm_model)


# ---------------------------------------------------------------------------------- splitters
def timm_splitter(groups: list | None = None) -> Any:
    """timm models: stages (feature_info) of hierarchical models; early/middle/late block groups of ViTs."""
    from distillctl_timm.splitter import splitter_factory

    return splitter_factory(groups)


@hookimpl
def register_splitters(register: Any) -> None:
    register("timm", timm_splitter)


# ---------------------------------------------------------------------------------- families
def timm_family(label_smoothing: float = 0.0) -> Any:
    """timm image classifiers: cross-entropy on labels; logit KL (temperature); accuracy evaluation."""
    from distillctl_timm.family import TimmFamily

    return TimmFamily(label_smoothing=label_smoothing)


@hookimpl
def register_families(register: Any) -> None:
    register("timm", timm_family)


# ---------------------------------------------------------------------------------- datasets
def shapes_labels(split: str = "train", image_size: int = 32, seed: int = 0, length: int = 0) -> Any:
    """Procedural labelled shapes (5 classes: the large object's shape), offline (splits train, val, test)."""
    from distillctl_timm.data import ShapesLabelsDataset

    return ShapesLabelsDataset(split=split, image_size=image_size, seed=seed, length=length or None)


def image_folder(split: str = "train", path: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Any:
    """Labelled image folders, ImageFolder layout ROOT/<class>/<image> (or ROOT/{train,val,test}/<class>/...)."""
    from distillctl.errors import DataError
    from distillctl_timm.data import ImageFolderDataset

    if not path:
        raise DataError("data.path is required for the image-folder source (--set data.path=DIR).")
    return ImageFolderDataset(path, split=split, val_fraction=val_fraction, test_fraction=test_fraction)


@hookimpl
def register_datasets(register: Any) -> None:
    register("shapes-labels", shapes_labels)
    register("image-folder", image_folder, aliases=("imagefolder",))


# ---------------------------------------------------------------------------------- evaluators
def accuracy(samples: int = 0, batch_size: int = 100) -> Any:
    """Top-1 / top-5 accuracy on labelled data and teacher-student top-1 agreement (0 samples = eval.samples)."""
    from distillctl_timm.evaluators import accuracy as make

    return make(samples=samples, batch_size=batch_size)


@hookimpl
def register_evaluators(register: Any) -> None:
    register("accuracy", accuracy, aliases=("top1",))
