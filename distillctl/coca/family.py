"""The ``coca`` family: open_clip CoCa models (image encoder, text encoder, multimodal decoder).

Everything the engine must not know about CoCa lives here: the ``(image, text)`` forward and its
output keys, open_clip's ``CoCaLoss`` (contrastive + captioning), the caption-logit and
similarity-matrix distillation terms, which token positions are padding, and how a student is
exported so that ``open_clip.create_model_and_transforms("local-dir:OUT")`` loads it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from distillctl.coca.splitter import CocaSplitter
from distillctl.errors import DistillctlError
from distillctl.interfaces import StepPlan, Teacher
from distillctl.losses import caption_kl, contrastive_kl, embedding_cos_terms, similarity
from distillctl.openclip.family import OpenClipFamilyMixin


def image_features(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image tower alone: L2-normalised image embeddings ``[B, E]`` (a module-local step's forward)."""
    return {"image_features": model.encode_image(inputs["image"], normalize=True)}


def text_features(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The unimodal text tower alone: L2-normalised caption embeddings ``[B, E]``."""
    return {"text_features": model.encode_text(inputs["text"], normalize=True)}


class CocaFamily(OpenClipFamilyMixin):
    """open_clip CoCa: task = contrastive + captioning; KD = caption-logit KL + similarity-matrix KL."""

    name = "coca"
    evaluators: tuple[str, ...] = ("retrieval", "captioning", "fidelity", "efficiency")

    def __init__(self, caption_weight: float = 2.0, clip_weight: float = 1.0, contrastive_kd_weight: float = 1.0,
                 embedding_kd_weight: float = 1.0) -> None:
        import open_clip

        for key, value in (("caption_weight", caption_weight), ("clip_weight", clip_weight),
                           ("contrastive_kd_weight", contrastive_kd_weight), ("embedding_kd_weight", embedding_kd_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise DistillctlError(f"family.{key} must be a number >= 0, got {value!r}.")
        self.contrastive_kd_weight = float(contrastive_kd_weight)
        self.embedding_kd_weight = float(embedding_kd_weight)  # module-local steps only (one tower's embeddings)
        self._task = open_clip.CoCaLoss(caption_loss_weight=caption_weight, clip_loss_weight=clip_weight, pad_id=0)
        self._masks = CocaSplitter()

    # ------------------------------------------------------------------ training
    # inputs(batch, device): OpenClipFamilyMixin ({"image": [B,3,H,W], "text": [B,L]})

    def forward(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return model(inputs["image"], inputs["text"])  # image/text_features, logits [B,L-1,V], labels, logit_scale

    def task_loss(self, outputs: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "logits" not in outputs:  # a module-local step: one tower's embeddings, no task term is computable
            return {}
        parts = self._task(**outputs, output_dict=True)
        return {"contrastive": parts["contrastive_loss"], "caption": parts["caption_loss"]}

    def kd_terms(self, student_out: dict[str, torch.Tensor], teacher_out: dict[str, torch.Tensor],
                 inputs: dict[str, torch.Tensor], *, temperature: float) -> dict[str, torch.Tensor]:
        if "logits" not in student_out:  # a module-local step: the cosine of the tower's embeddings to the teacher's
            return embedding_cos_terms(student_out, teacher_out, self.embedding_kd_weight)
        terms = {"caption_kl": caption_kl(student_out["logits"], teacher_out["logits"], student_out["labels"], temperature)}
        if self.contrastive_kd_weight:
            s_sim = similarity(student_out["image_features"], student_out["text_features"], student_out["logit_scale"])
            t_sim = similarity(teacher_out["image_features"], teacher_out["text_features"], teacher_out["logit_scale"])
            terms["contrastive_kl"] = self.contrastive_kd_weight * contrastive_kl(s_sim, t_sim, temperature)  # [B,B]
        return terms

    def position_mask(self, module: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return self._masks.position_mask(module, inputs["text"])

    def step_plan(self, modules: tuple[str, ...]) -> StepPlan | None:
        """Module-local steps: ``vision`` alone runs the image towers only, ``text`` alone the unimodal text
        towers only. Their task terms (contrastive, caption) need both towers and the decoder; what one tower
        gives is its embedding, so such a step's KD term is ``1 - cos`` of the student's embedding to the
        teacher's (``embedding_kd_weight``), next to the arm's layerwise terms. An arm with ``multimodal``
        needs both towers and the decoder: the full step."""
        arm = set(modules)
        if arm == {"vision"}:
            return StepPlan(parts=("visual",), forward=image_features, terms=True)
        if arm == {"text"}:
            return StepPlan(parts=("text",), forward=text_features, terms=True)
        return None  # vision+text still needs the decoder for CoCa's caption terms; multimodal: everything

    # ------------------------------------------------------------------ models
    def build(self, model_config: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
        from distillctl.coca.models import build_coca

        return build_coca(model_config, device)

    def with_depths(self, model_config: dict[str, Any], depths: dict[str, int]) -> dict[str, Any]:
        from distillctl.coca.models import normalize_config
        from distillctl.coca.students import MODULE_CFG

        cfg = normalize_config(model_config)
        for module, n in depths.items():
            if module not in MODULE_CFG:
                raise DistillctlError(f"unknown CoCa module {module!r} (valid: {', '.join(MODULE_CFG)}).")
            cfg[MODULE_CFG[module]]["layers"] = int(n)
        return cfg

    # ------------------------------------------------------------------ export / load
    def load(self, path: Path, device: str = "cpu") -> Teacher:
        from distillctl.coca.models import build_coca
        from distillctl.export import read_export
        from distillctl.openclip.tokenizer import make_tokenizer
        from distillctl.openclip.transforms import make_transform

        state, meta, model_config = read_export(path)
        model = build_coca(model_config, "cpu", init_decoder=False)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        preprocess = json.loads(meta.get("preprocess_config", "{}"))
        tok_cfg = json.loads(meta.get("tokenizer_config", "{}"))
        if tok_cfg.get("type") == "words":  # the project's own word tokenizer (quickstart)
            from distillctl.data import ImageTransform, WordTokenizer

            tokenizer: Any = WordTokenizer(tok_cfg["words"], tok_cfg["context_length"], tok_cfg["vocab_size"])
            transform: Any = ImageTransform(int(preprocess["size"]), preprocess["mean"], preprocess["std"])
        else:
            tokenizer, transform = make_tokenizer(model_config), make_transform(preprocess)
        return Teacher(name=str(path), model=model.to(device).eval().requires_grad_(False), tokenizer=tokenizer,
                       transform=transform, model_config=model_config, preprocess_config=preprocess,
                       weights=str(path), weights_hash="", splitter="coca", tokenizer_config=tok_cfg, family=self.name)

    # ------------------------------------------------------------------ evaluation forwards
    def caption_logits(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(inputs["image"], inputs["text"])
        return out["logits"], out["labels"]  # [B, L-1, V], [B, L-1]

    def caption_start(self, model: torch.nn.Module, images: torch.Tensor) -> Any:
        latent, embs = model._encode_image(images)  # image features once, reused at every step
        return images, latent, embs

    def caption_step(self, model: torch.nn.Module, state: Any, prefix: torch.Tensor) -> torch.Tensor:
        images, latent, embs = state
        return model(images, prefix, image_latent=latent, image_embs=embs, output_labels=False)["logits"][:, -1]
