"""Built-in evaluators (registered through the same hook as any third-party plugin).

Every evaluator is ``factory(samples=...) -> obj`` with ``obj.evaluate(model, tokenizer, transform,
dataset, device=...) -> {metric: value}``; the heavy code lives in :mod:`distillctl.evaluation`.
"""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


class _Retrieval:
    name = "retrieval"

    def __init__(self, samples: int, group: int) -> None:
        self.samples, self.group = samples, group

    def evaluate(self, model: Any, tokenizer: Any, transform: Any, dataset: Any, *, device: str = "cpu") -> dict[str, float]:
        from distillctl.evaluation import full_eval

        return full_eval(model, dataset, transform, tokenizer, samples=self.samples, group=self.group, device=device)


class _Captioning:
    name = "captioning"

    def __init__(self, samples: int) -> None:
        self.samples = samples

    def evaluate(self, model: Any, tokenizer: Any, transform: Any, dataset: Any, *, device: str = "cpu") -> dict[str, float]:
        from distillctl.evaluation import caption_metrics, collect

        n = min(self.samples, len(dataset))
        images, _, caps = collect(dataset, range(n), transform, tokenizer)
        return caption_metrics(model, images, caps, tokenizer, device=device)


class _Efficiency:
    name = "efficiency"

    def __init__(self, samples: int, batch_size: int) -> None:
        self.samples, self.batch_size = samples, batch_size

    def evaluate(self, model: Any, tokenizer: Any, transform: Any, dataset: Any, *, device: str = "cpu") -> dict[str, float]:
        import time

        import torch

        from distillctl.evaluation import collect

        n = min(self.batch_size, len(dataset))
        images, texts, _ = collect(dataset, range(n), transform, tokenizer)
        images, texts = images.to(device), texts.to(device)
        was = model.training
        model.eval()
        times = []
        with torch.no_grad():
            for _ in range(4):
                t = time.perf_counter()
                model(images, texts)
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        model.train(was)
        params = sum(p.numel() for p in model.parameters())
        best = sorted(times[1:])[len(times[1:]) // 2]  # median after one warm-up
        return {"params_m": params / 1e6, "forward_ms_per_image": 1000 * best / n, "images_per_s": n / best}


def retrieval(samples: int = 1000, group: int = 100) -> _Retrieval:
    """Image<->text R@1 within groups of 100, plus teacher-forced token accuracy."""
    return _Retrieval(samples, group)


def captioning(samples: int = 200) -> _Captioning:
    """Greedy captions (own decoder): exact match and word accuracy."""
    return _Captioning(samples)


def efficiency(samples: int = 0, batch_size: int = 32) -> _Efficiency:
    """Parameters and measured forward latency / throughput."""
    return _Efficiency(samples, batch_size)


@hookimpl
def register_evaluators(register: Register) -> None:
    register("retrieval", retrieval)
    register("captioning", captioning, aliases=("caption",))
    register("efficiency", efficiency)
