"""The ``clip`` family: open_clip CLIP models (image encoder + text encoder, contrastive).

Everything the engine must not know about CLIP lives here: the ``(image, text)`` forward and its output
keys, open_clip's ``ClipLoss`` (``SigLipLoss`` for models with a ``logit_bias``), the distillation terms
(similarity-matrix KL, embedding cosine), which text positions are padding, and how a student is
exported so that ``open_clip.create_model_and_transforms("local-dir:OUT")`` loads it unchanged.

Limits (open_clip 3.3.0): a timm vision tower's depth is fixed by its timm model name (open_clip passes
no depth to timm), so ``with_depths`` keeps a timm tower's depth and refuses to change it; ResNet vision
towers and Hugging Face text towers are refused (no token blocks / no open_clip tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from distillctl.clip.splitter import ClipSplitter, text_has_cls
from distillctl.errors import DistillctlError
from distillctl.interfaces import StepPlan, Teacher
from distillctl.losses import contrastive_kl, embedding_cos_terms, similarity
from distillctl.openclip.family import OpenClipFamilyMixin

MODULE_CFG = {"vision": "vision_cfg", "text": "text_cfg"}


class ClipFamily(OpenClipFamilyMixin):
    """open_clip CLIP: task = contrastive (ClipLoss / SigLipLoss); KD = similarity-matrix KL + embedding cosine."""

    name = "clip"
    evaluators: tuple[str, ...] = ("retrieval", "zeroshot", "fidelity", "efficiency")

    def __init__(self, contrastive_kd_weight: float = 1.0, embedding_kd_weight: float = 1.0) -> None:
        from open_clip.loss import ClipLoss, SigLipLoss

        for key, value in (("contrastive_kd_weight", contrastive_kd_weight), ("embedding_kd_weight", embedding_kd_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise DistillctlError(f"family.{key} must be a number >= 0, got {value!r}.")
        self.contrastive_kd_weight = float(contrastive_kd_weight)
        self.embedding_kd_weight = float(embedding_kd_weight)
        self._clip_loss = ClipLoss()
        self._siglip_loss = SigLipLoss()
        self._splitter = ClipSplitter()
        self._text_cls = False  # CustomTextCLIP with embed_cls: text blocks see L+1 positions (set by forward)

    # ------------------------------------------------------------------ training
    # inputs(batch, device): OpenClipFamilyMixin ({"image": [B,3,H,W], "text": [B,L]})

    def forward(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(inputs["image"], inputs["text"])
        if not isinstance(out, dict):  # a CLIP built elsewhere with output_dict=False: (img, txt, scale[, bias])
            out = dict(zip(("image_features", "text_features", "logit_scale", "logit_bias"), out, strict=False))
        self._text_cls = text_has_cls(model)
        return out  # image_features [B, E], text_features [B, E] (L2-normalised), logit_scale (exp), logit_bias?

    def step_plan(self, modules: tuple[str, ...]) -> StepPlan | None:
        """Module-local steps: ``vision`` alone runs the image towers only, ``text`` alone the text towers only.
        The task and similarity-matrix terms pair images with texts; what one tower gives is its embedding, so
        such a step's KD term is ``1 - cos`` of the student's embedding to the teacher's (when the embed dims
        match), next to the arm's layerwise terms. Both modules: the full step."""
        arm = set(modules)
        if arm == {"vision"}:
            return StepPlan(parts=("visual",), terms=True,
                            forward=lambda model, inputs: {"image_features": model.encode_image(inputs["image"], normalize=True)})
        if arm == {"text"}:
            def text_forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
                self._text_cls = text_has_cls(model)  # the text position mask depends on it
                return {"text_features": model.encode_text(inputs["text"], normalize=True)}

            return StepPlan(parts=("text",), forward=text_forward, terms=True)
        return None

    def task_loss(self, outputs: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "logit_scale" not in outputs:  # a module-local step: one tower's embeddings, no task term is computable
            return {}
        img, txt, scale = outputs["image_features"], outputs["text_features"], outputs["logit_scale"]
        if outputs.get("logit_bias") is not None:  # SigLIP-style: pairwise sigmoid loss
            return {"sigmoid": self._siglip_loss(img, txt, scale, outputs["logit_bias"])}
        return {"contrastive": self._clip_loss(img, txt, scale)}  # (CE(I->T) + CE(T->I)) / 2

    def kd_terms(self, student_out: dict[str, torch.Tensor], teacher_out: dict[str, torch.Tensor],
                 inputs: dict[str, torch.Tensor], *, temperature: float) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if "logit_scale" not in student_out:  # a module-local step: the cosine of the tower's embeddings to the teacher's
            return embedding_cos_terms(student_out, teacher_out, self.embedding_kd_weight)
        if self.contrastive_kd_weight:
            s_sim = similarity(student_out["image_features"], student_out["text_features"], student_out["logit_scale"])
            t_sim = similarity(teacher_out["image_features"], teacher_out["text_features"], teacher_out["logit_scale"])
            terms["contrastive_kl"] = self.contrastive_kd_weight * contrastive_kl(s_sim, t_sim, temperature)  # [B,B] rows+cols
        # embedding terms: 1 - cos(student, teacher) per image and per caption. They need a shared
        # embedding space, so they apply only when the embed dims match (a layer-subset student always
        # does); otherwise the similarity-matrix KL (width-independent) is the only logit-level signal.
        if self.embedding_kd_weight and student_out["image_features"].shape[-1] == teacher_out["image_features"].shape[-1]:
            for key, term in (("image_features", "image_cos"), ("text_features", "text_cos")):
                cos = F.cosine_similarity(student_out[key].float(), teacher_out[key].float(), dim=-1)  # [B]
                terms[term] = self.embedding_kd_weight * (1.0 - cos).mean()
        return terms

    def position_mask(self, module: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return self._splitter.position_mask(module, inputs["text"], text_cls=self._text_cls)

    # ------------------------------------------------------------------ models
    def build(self, model_config: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
        from distillctl.clip.models import build_clip

        return build_clip(model_config, device)

    def with_depths(self, model_config: dict[str, Any], depths: dict[str, int]) -> dict[str, Any]:
        import copy

        from distillctl.clip.models import is_timm_tower

        cfg = copy.deepcopy(model_config)
        for module, n in depths.items():
            if module not in MODULE_CFG:
                raise DistillctlError(f"unknown CLIP module {module!r} (valid: {', '.join(MODULE_CFG)}).")
            if module == "vision" and is_timm_tower(cfg):
                name = cfg["vision_cfg"]["timm_model_name"]
                have = timm_depth(name)
                if int(n) != have:
                    raise DistillctlError(
                        f"the vision tower is timm model {name!r} ({have} blocks): open_clip 3.3.0 passes no depth to "
                        "timm, so a student's timm tower keeps all its blocks.",
                        hint=f"Keep them with --set student.depths.vision={have} (only the text tower is shortened).",
                    )
                continue
            cfg[MODULE_CFG[module]]["layers"] = int(n)
        return cfg

    # ------------------------------------------------------------------ export / load
    def load(self, path: Path, device: str = "cpu") -> Teacher:
        from distillctl.clip.models import build_clip, make_clip_bundle
        from distillctl.export import read_export
        from distillctl.openclip.transforms import preprocess_config

        state, meta, model_config = read_export(path)
        model = build_clip(model_config, "cpu")
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        preprocess = json.loads(meta.get("preprocess_config", "{}")) or preprocess_config(model_config)
        bundle = make_clip_bundle(str(path), model, model_config, preprocess, weights=str(path), weights_hash="",
                                  model_name=str(path), device=device)
        tok_cfg = json.loads(meta.get("tokenizer_config", "{}"))
        if tok_cfg:
            bundle.tokenizer_config = tok_cfg
        return bundle

    # ------------------------------------------------------------------ evaluation forwards

def timm_depth(model_name: str) -> int:
    """Blocks of a timm model, counted on the meta device (no memory, no download)."""
    import timm

    with torch.device("meta"):
        trunk = timm.create_model(model_name, pretrained=False)
    blocks = getattr(trunk, "blocks", None)
    if blocks is None:
        raise DistillctlError(f"timm model {model_name!r} has no `blocks`: the clip family needs a ViT-like timm tower.")
    return len(blocks)
