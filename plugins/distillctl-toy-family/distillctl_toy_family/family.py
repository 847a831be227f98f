"""The ``toy`` family, teacher, student and splitter: a complete model family in one file.

Everything distillctl's engine needs to know about this model lives in :class:`ToyFamily`; the
splitter names its modules (``image``, ``text``) and their layers; the teacher is a seeded
random-init model (weights from a file also work); the student keeps half the blocks of each tower,
weights copied from the kept teacher blocks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from distillctl.data import VOCAB_WORDS, ImageTransform, WordTokenizer
from distillctl.errors import DistillctlError
from distillctl.export import read_export, save_weights
from distillctl.interfaces import Module, Stack, Student, Teacher
from distillctl.layerwise import uniform_layer_map
from distillctl_toy_family.model import DEFAULT_CONFIG, build

TEACHER_SEED = 0
PREPROCESS = {"size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
STACKS = {"image": "image.blocks", "text": "text.blocks"}  # module -> its nn.ModuleList
DEPTH_KEYS = {"image": "image_layers", "text": "text_layers"}  # module -> the config key of its depth


def _tokenizer(cfg: dict[str, Any]) -> WordTokenizer:
    return WordTokenizer(VOCAB_WORDS, cfg["context_length"], cfg["vocab_size"])  # the shapes captions' words


def _transform(preprocess: dict[str, Any]) -> ImageTransform:
    return ImageTransform(int(preprocess["size"]), preprocess["mean"], preprocess["std"])


def _state_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def toy_bundle(name: str, model: torch.nn.Module, cfg: dict[str, Any], *, weights: str, weights_hash: str,
               device: Any = "cpu") -> Teacher:
    """A :class:`Teacher` bundle of a toy model (teachers and reloaded students alike): eval mode, frozen,
    naming the family and splitter that understand it (both required)."""
    tokenizer = _tokenizer(cfg)
    return Teacher(name=name, model=model.to(device).eval().requires_grad_(False), tokenizer=tokenizer,
                   transform=_transform(PREPROCESS), model_config=dict(cfg), preprocess_config=dict(PREPROCESS),
                   weights=weights, weights_hash=weights_hash, family="toy", splitter="toy",
                   tokenizer_config=tokenizer.config())


# ----------------------------------------------------------------------------- family
class ToyFamily:
    """CLIP-style contrastive task loss; KD = KL of the image-text similarity matrix."""

    name = "toy"
    evaluators: tuple[str, ...] = ("retrieval", "efficiency")

    def __init__(self, kd_weight: float = 1.0) -> None:
        if isinstance(kd_weight, bool) or not isinstance(kd_weight, (int, float)) or kd_weight < 0:
            raise DistillctlError(f"family.kd_weight must be a number >= 0, got {kd_weight!r}.")
        self.kd_weight = float(kd_weight)

    # -- training
    def inputs(self, batch: Any, device: Any) -> dict[str, torch.Tensor]:
        if batch.text is None:
            raise DistillctlError("the toy family needs captions (its teacher has a tokenizer).")
        return {"image": batch.images.to(device), "text": batch.text.to(device)}  # [B,3,H,W], [B,L]

    def forward(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return model(inputs["image"], inputs["text"])

    @staticmethod
    def _similarity(out: dict[str, torch.Tensor]) -> torch.Tensor:
        return out["logit_scale"] * out["image_features"].float() @ out["text_features"].float().T  # [B, B]

    def task_loss(self, outputs: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sim = self._similarity(outputs)
        target = torch.arange(sim.shape[0], device=sim.device)
        return {"contrastive": (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2}

    def kd_terms(self, student_out: dict[str, torch.Tensor], teacher_out: dict[str, torch.Tensor],
                 inputs: dict[str, torch.Tensor], *, temperature: float) -> dict[str, torch.Tensor]:
        if not self.kd_weight:
            return {}
        s, t = self._similarity(student_out) / temperature, self._similarity(teacher_out) / temperature

        def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(a, -1), F.log_softmax(b, -1), log_target=True, reduction="batchmean")

        return {"similarity_kl": self.kd_weight * (kl(s, t) + kl(s.T, t.T)) / 2 * temperature**2}

    def position_mask(self, module: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return inputs["text"] != 0 if module == "text" else None  # [B, L]: pads carry no layerwise loss

    # -- models
    def build(self, model_config: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
        return build(model_config, device)

    def with_depths(self, model_config: dict[str, Any], depths: dict[str, int]) -> dict[str, Any]:
        cfg = {**DEFAULT_CONFIG, **model_config}
        for module, n in depths.items():
            if module not in DEPTH_KEYS:
                raise DistillctlError(f"unknown toy module {module!r} (valid: {', '.join(DEPTH_KEYS)}).")
            cfg[DEPTH_KEYS[module]] = int(n)
        return cfg

    def dummy_inputs(self, bundle: Teacher, batch_size: int, device: Any) -> dict[str, torch.Tensor]:
        size = int(bundle.preprocess_config["size"])
        return {"image": torch.zeros(batch_size, 3, size, size, device=device),
                "text": torch.ones(batch_size, bundle.model_config["context_length"], dtype=torch.long, device=device)}

    # -- export / load
    def export(self, model: torch.nn.Module, out_dir: Any, *, model_config: dict[str, Any], source: Teacher,
               metadata: dict[str, str], dtype: str) -> dict[str, Any]:
        return save_weights(model, Path(out_dir) / "student.safetensors", dtype=dtype, metadata={
            **metadata, "family": self.name, "model_config": json.dumps(model_config)})

    def load(self, path: Any, device: str = "cpu") -> Teacher:
        state, _meta, cfg = read_export(Path(path))
        model = build(cfg, "cpu")
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return toy_bundle(str(path), model, cfg, weights=str(path), weights_hash="", device=device)

    # -- evaluation forwards
    def encode_image(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(images)

    def encode_text(self, model: torch.nn.Module, text: torch.Tensor) -> torch.Tensor:
        return model.encode_text(text)


# ----------------------------------------------------------------------------- splitter
class ToySplitter:
    """Modules ``image`` (``image.blocks.{i}``) and ``text`` (``text.blocks.{i}``); each block outputs [B, L, D]."""

    def modules(self, model: torch.nn.Module) -> list[Module]:
        return [Module(name, (Stack(path, len(model.get_submodule(path))),)) for name, path in STACKS.items()]

    def check_compatible(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        for key in ("image_size", "patch_size", "context_length"):
            if teacher.config[key] != student.config[key]:
                raise DistillctlError(f"toy student {key}={student.config[key]} differs from the teacher's "
                                      f"{teacher.config[key]}: hidden states cannot be paired.")


# ----------------------------------------------------------------------------- factories
def toy_teacher(weights: str | None = None, device: str = "cpu", width: int = 64, layers: int = 4) -> Teacher:
    """Toy two-tower teacher (plain torch; seeded random init, or a .safetensors file)."""
    cfg = {**DEFAULT_CONFIG, "width": width, "image_layers": layers, "text_layers": layers}
    if weights in (None, "random"):
        model = build(cfg, device, seed=TEACHER_SEED)
        digest = "" if device == "meta" else _state_hash(model)
        return toy_bundle("toy", model, cfg, weights="random", weights_hash=digest, device=device)
    from safetensors.torch import load_file

    path = Path(weights).expanduser()
    if not path.is_file():
        raise DistillctlError(f"toy teacher weights not found: {path} (check --teacher-weights).")
    model = build(cfg, "cpu")
    model.load_state_dict(load_file(str(path)), strict=True)
    return toy_bundle("toy", model, cfg, weights=str(path), weights_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
                      device=device)


def toy_half(teacher: Teacher, splitter: Any, ratio: float = 0.5) -> Student:
    """Half the blocks of each toy tower, weights copied from the kept teacher blocks."""
    if not 0 < ratio <= 1:
        raise DistillctlError(f"student.ratio must be in (0, 1], got {ratio!r}.")
    family = ToyFamily()
    depths = {m.name: max(1, round(m.depth * ratio)) for m in splitter.modules(teacher.model)}
    cfg = family.with_depths(teacher.model_config, depths)
    device = next(teacher.model.parameters()).device
    model = build(cfg, device)
    layer_map = {m.name: {STACKS[m.name]: uniform_layer_map(m.depth, depths[m.name])}
                 for m in splitter.modules(teacher.model)}
    if device.type != "meta":  # copy: every non-block tensor as is, block i from its mapped teacher block
        t_state = teacher.model.state_dict()
        renamed = {}
        for key in model.state_dict():
            src = key
            for module, stack in STACKS.items():
                if key.startswith(stack + "."):
                    i, rest = key[len(stack) + 1:].split(".", 1)
                    src = f"{stack}.{layer_map[module][stack][int(i)]}.{rest}"
            renamed[key] = t_state[src].detach().clone()
        model.load_state_dict(renamed)
    model.train().requires_grad_(True)
    return Student(model=model, model_config=cfg, layer_map=layer_map,
                   description=f"toy student: {depths['image']} image + {depths['text']} text blocks")


def toy_family(kd_weight: float = 1.0) -> ToyFamily:
    """Toy two-tower family: contrastive task loss, similarity-matrix KD."""
    return ToyFamily(kd_weight=kd_weight)


def toy_splitter() -> ToySplitter:
    """Toy two-tower model: image / text blocks."""
    return ToySplitter()
