"""Built-in evaluators (registered through the same hook as any third-party plugin).

Contract (:class:`distillctl.interfaces.Evaluator`): ``factory(**options) -> evaluator``;
``evaluator.evaluate(bundle, ctx) -> {metric: value}`` is called for the student, then the teacher;
``evaluate_pair(student, teacher, ctx)`` (optional) adds metrics that compare the two. Models are
reached only through ``ctx.family``'s evaluation forwards; the heavy code lives in
:mod:`distillctl.evaluation`.
"""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


def _require(ctx: Any, evaluator: str, *methods: str) -> None:
    from distillctl.errors import DistillctlError

    missing = [m for m in methods if not hasattr(ctx.family, m)]
    if missing:
        raise DistillctlError(
            f"evaluator {evaluator!r} does not apply to family {ctx.family.name!r} (it has no {', '.join(missing)}); "
            f"evaluators for this family: {', '.join(getattr(ctx.family, 'evaluators', ())) or 'none'}."
        )


class _Retrieval:
    name = "retrieval"

    def __init__(self, samples: int | None, group: int) -> None:
        self.samples, self.group = samples, group

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        from distillctl.evaluation import full_eval

        _require(ctx, self.name, "encode_image", "encode_text")
        return full_eval(bundle.model, ctx.dataset, bundle.transform, bundle.tokenizer, samples=self.samples or ctx.samples,
                         group=self.group, device=ctx.device, family=ctx.family)


class _Captioning:
    name = "captioning"

    def __init__(self, samples: int | None) -> None:
        self.samples = samples

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        from distillctl.evaluation import caption_metrics, collect

        _require(ctx, self.name, "caption_start", "caption_step")
        n = min(self.samples or ctx.samples, len(ctx.dataset))
        images, _, caps = collect(ctx.dataset, range(n), bundle.transform, bundle.tokenizer)
        return caption_metrics(bundle.model, images, caps, bundle.tokenizer, device=ctx.device, family=ctx.family)


class _Efficiency:
    name = "efficiency"

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        import time

        import torch

        from distillctl.data.loader import make_batch

        model, device = bundle.model, ctx.device
        n = min(self.batch_size, len(ctx.dataset))
        inputs = ctx.family.inputs(make_batch(ctx.dataset, range(n), bundle.transform, bundle.tokenizer), device)
        was = model.training
        model.eval()
        times = []
        with torch.no_grad():
            for _ in range(4):
                t = time.perf_counter()
                ctx.family.forward(model, inputs)
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        model.train(was)
        params = sum(p.numel() for p in model.parameters())
        best = sorted(times[1:])[len(times[1:]) // 2]  # median after one warm-up
        return {"params_m": params / 1e6, "forward_ms_per_image": 1000 * best / n, "images_per_s": n / best}


def retrieval(samples: int = 0, group: int = 100) -> _Retrieval:
    """Image<->text R@1 within groups of 100, plus teacher-forced token accuracy (0 samples = eval.samples)."""
    return _Retrieval(samples or None, group)


def captioning(samples: int = 0) -> _Captioning:
    """Greedy captions (own decoder): exact match and word accuracy (0 samples = eval.samples)."""
    return _Captioning(samples or None)


def efficiency(batch_size: int = 32) -> _Efficiency:
    """Parameters and measured forward latency / throughput."""
    return _Efficiency(batch_size)


@hookimpl
def register_evaluators(register: Register) -> None:
    register("retrieval", retrieval)
    register("captioning", captioning, aliases=("caption",))
    register("efficiency", efficiency)
