"""The ``accuracy`` evaluator: top-1 / top-5 on labelled data, and teacher-student top-1 agreement."""

from __future__ import annotations

from typing import Any

from distillctl.errors import DistillctlError


class Accuracy:
    """``top1``, ``top5`` (more than 5 classes only) over the labelled samples; ``agreement`` with the teacher (pair)."""

    name = "accuracy"

    def __init__(self, samples: int = 0, batch_size: int = 100) -> None:
        self.samples, self.batch_size = samples, batch_size

    def applies_to(self, family: Any) -> bool:
        return hasattr(family, "class_logits")

    def _logits(self, bundle: Any, ctx: Any) -> tuple[Any, list[str | None]]:
        import torch

        from distillctl.data import make_batch

        if not self.applies_to(ctx.family):
            raise DistillctlError(f"evaluator 'accuracy' does not apply to family {ctx.family.name!r} (it has no class_logits).")
        n = min(self.samples or ctx.samples, len(ctx.dataset))
        model, was = bundle.model, bundle.model.training
        model.eval()
        logits, labels = [], []
        try:
            with torch.no_grad():
                for start in range(0, n, self.batch_size):
                    batch = make_batch(ctx.dataset, range(start, min(n, start + self.batch_size)), bundle.transform, None)
                    logits.append(ctx.family.class_logits(model, batch.images.to(ctx.device)).float().cpu())  # [b, C]
                    labels += list(batch.labels)
        finally:
            model.train(was)
        return torch.cat(logits), labels

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        from distillctl_timm.family import IGNORE, label_targets

        logits, labels = self._logits(bundle, ctx)
        targets = label_targets(bundle.model, labels, "cpu")
        keep = targets != IGNORE
        n = int(keep.sum())
        if n == 0:
            ctx.notes.append("accuracy: the evaluation data has no labels; only teacher-student agreement is measured.")
            return {}
        logits, targets = logits[keep], targets[keep]
        out = {"top1": float((logits.argmax(-1) == targets).float().mean())}
        if logits.shape[-1] > 5:
            top5 = logits.topk(5, dim=-1).indices  # [n, 5]
            out["top5"] = float((top5 == targets[:, None]).any(-1).float().mean())
        return out

    def evaluate_pair(self, student: Any, teacher: Any, ctx: Any) -> dict[str, float]:
        s, _ = self._logits(student, ctx)
        t, _ = self._logits(teacher, ctx)
        return {"agreement": float((s.argmax(-1) == t.argmax(-1)).float().mean())}


def accuracy(samples: int = 0, batch_size: int = 100) -> Accuracy:
    """Top-1 / top-5 accuracy on labelled data and teacher-student top-1 agreement (0 samples = eval.samples)."""
    if samples < 0 or batch_size < 1:
        raise DistillctlError(f"accuracy: samples must be >= 0 and batch_size >= 1, got {samples}, {batch_size}.")
    return Accuracy(samples, batch_size)
