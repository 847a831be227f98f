"""Loss terms of the distillation objective (DESIGN §3).

``total = w_task * task + w_kd * logit_kd + w_lw * layerwise``

* task: CoCa's own contrastive + captioning loss on the data (open_clip ``CoCaLoss``);
* logit KD: KL(teacher || student) of caption logits at temperature T (pad labels masked) plus KL of
  the contrastive similarity matrix, row- and column-wise, both scaled by T²;
* layerwise: per module, the mean over its (student layer, teacher layer) pairs of the masked,
  normalised hidden-state MSE (``distillctl.layerwise.masked_mse``), after a learned projection
  where widths differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def caption_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) per caption position, mean over non-pad labels, times T². [B, L-1, V]"""
    valid = labels != 0  # [B, L-1]
    s = F.log_softmax(student_logits[valid].float() / temperature, dim=-1)  # [N, V]
    t = F.log_softmax(teacher_logits[valid].float() / temperature, dim=-1)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def similarity(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``scale * I Tᵀ`` on L2-normalised features. [B, B]"""
    return logit_scale * F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T


def contrastive_kl(student_sim: torch.Tensor, teacher_sim: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL of the similarity matrix, image->text rows and text->image columns, times T²."""

    def kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.kl_div(
            F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1), log_target=True, reduction="batchmean"
        )

    return (kl(student_sim, teacher_sim) + kl(student_sim.T, teacher_sim.T)) / 2 * temperature**2


def embedding_cos_terms(student_out: dict, teacher_out: dict, weight: float) -> dict:
    """``1 - cos(student, teacher)`` per image / caption embedding present in both outputs (mean over the batch),
    as ``image_cos`` / ``text_cos``; only where the embed dims match (a shared embedding space)."""
    import torch.nn.functional as F

    terms = {}
    for key, term in (("image_features", "image_cos"), ("text_features", "text_cos")):
        s, t = student_out.get(key), teacher_out.get(key)
        if weight and s is not None and t is not None and s.shape[-1] == t.shape[-1]:
            terms[term] = weight * (1.0 - F.cosine_similarity(s.float(), t.float(), dim=-1)).mean()  # [B] -> scalar
    return terms
