"""Built-in evaluators (registered through the same hook as any third-party plugin).

Contract (:class:`distillctl.interfaces.Evaluator`): ``factory(**options) -> evaluator``;
``evaluator.evaluate(bundle, ctx) -> {metric: value}`` is called for the student, then the teacher;
``evaluate_pair(student, teacher, ctx)`` (optional) adds metrics that compare the two. Models are
reached only through ``ctx.family``'s evaluation forwards; the heavy code lives in
:mod:`distillctl.evaluation`. Options come from ``[eval.options.<evaluator>]`` (e.g.
``eval.options = {captioning = {beams = 3}}``).

Each evaluator that needs a minimum number of items to mean something reports how many it used
(``retrieval_images``, ``zeroshot_images``, ``captioning_images``); :func:`undersampled` names the
metrics computed on fewer than :data:`distillctl.evaluation.MIN_SAMPLES`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillctl.hookspecs import Register, hookimpl

# count metric -> (evaluator, prefixes of the metrics that count covers)
_COUNTS = {
    "retrieval_images": ("retrieval", ("image_retrieval_recall@", "text_retrieval_recall@", "i2t_r1", "t2i_r1")),
    "zeroshot_images": ("zeroshot", ("zeroshot_",)),
    "captioning_images": ("captioning", ("bleu_", "rouge_l", "cider_d", "caption_")),
}


def undersampled(metrics: dict[str, float]) -> dict[str, str]:
    """``{metric: "n=37 < 100"}`` for every metric computed on fewer items than it needs."""
    from distillctl.evaluation import MIN_SAMPLES

    out = {}
    for count_key, (evaluator, prefixes) in _COUNTS.items():
        n = metrics.get(count_key)
        if n is None or n >= MIN_SAMPLES[evaluator]:
            continue
        for k in metrics:
            if k != count_key and k.startswith(prefixes):
                out[k] = f"n={int(n)} < {MIN_SAMPLES[evaluator]}"
    return out


def _require(ctx: Any, evaluator: str, *methods: str) -> None:
    from distillctl.errors import DistillctlError

    missing = [m for m in methods if not hasattr(ctx.family, m)]
    if missing:
        raise DistillctlError(
            f"evaluator {evaluator!r} does not apply to family {ctx.family.name!r} (it has no {', '.join(missing)}); "
            f"evaluators for this family: {', '.join(getattr(ctx.family, 'evaluators', ())) or 'none'}."
        )


def _note(ctx: Any, text: str) -> None:
    if text not in ctx.notes:
        ctx.notes.append(text)


def _images(items: list[tuple[int, Any]], transform: Any) -> Any:
    import torch

    return torch.stack([transform(s.image) for _, s in items])


def _role(bundle: Any, ctx: Any) -> str:
    return "teacher" if ctx.teacher is not None and bundle is ctx.teacher else "student"


# --------------------------------------------------------------------------- retrieval
class _Retrieval:
    name = "retrieval"

    def __init__(self, samples: int | None, group: int, ks: tuple[int, ...]) -> None:
        self.samples, self.group, self.ks = samples, group, ks

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        from distillctl.evaluation import (
            all_captions,
            embed_texts,
            encode,
            retrieval_r1,
            retrieval_recall,
            usable_samples,
        )

        _require(ctx, self.name, "encode_image", "encode_text")
        items = usable_samples(ctx.dataset, self.samples or ctx.samples)
        images = _images(items, bundle.transform)
        first = [s.caption for _, s in items]
        group = self.group if self.group >= 0 else (100 if getattr(ctx.dataset, "name", "") == "shapes" else 0)
        # grouped (shapes) keeps the historical batch size so that its numbers do not move
        enc = encode(bundle.model, images, bundle.tokenizer(first), device=ctx.device, family=ctx.family,
                     batch_size=250 if group else 32)
        out: dict[str, float] = {}
        if group:  # the `shapes` protocol: R@1 within consecutive groups of `group` items
            out.update(retrieval_r1(enc.image_features, enc.text_features, first, group=group))
        if enc.total_tokens >= 0:
            out["tf_token_acc"] = enc.correct_tokens / max(enc.total_tokens, 1)
        caps = [all_captions(s) for _, s in items]
        texts = [c for cs in caps for c in cs]
        index = [i for i, cs in enumerate(caps) for _ in cs]
        txt = enc.text_features if len(texts) == len(items) else embed_texts(
            bundle.model, bundle.tokenizer(texts), ctx.family, batch_size=250, device=ctx.device)
        out.update(retrieval_recall(enc.image_features, txt, index, self.ks))
        out["retrieval_images"], out["retrieval_texts"] = float(len(items)), float(len(texts))
        return out


# --------------------------------------------------------------------------- zero-shot
class _ZeroShot:
    name = "zeroshot"

    def __init__(self, samples: int | None, classnames: Any, templates: Any, batch_size: int) -> None:
        self.samples, self.classnames, self.templates, self.batch_size = samples, classnames, templates, batch_size
        self._classes: tuple[list[str], list[str]] | None = None

    def _class_list(self, ctx: Any, labels: list[str]) -> tuple[list[str], list[str]]:
        """(labels in class-index order, class names) -- the folder's subfolders when it lists them."""
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        from distillctl.errors import DataError

        if self._classes is not None:
            return self._classes
        classes = list(ctx.dataset.classes()) if hasattr(ctx.dataset, "classes") else sorted(set(labels))
        if self.classnames in (None, "", "folder"):
            names = [c.rsplit("/", 1)[-1].replace("_", " ") for c in classes]
        elif self.classnames == "imagenet":
            if len(classes) != len(IMAGENET_CLASSNAMES):
                raise DataError(f"eval.options.zeroshot.classnames='imagenet' needs the {len(IMAGENET_CLASSNAMES)} ImageNet "
                                f"class folders (sorted wnids), found {len(classes)} classes.")
            names = list(IMAGENET_CLASSNAMES)
        else:
            names = [str(c) for c in self.classnames]
            if len(names) != len(classes):
                raise DataError(f"eval.options.zeroshot.classnames has {len(names)} names for {len(classes)} classes "
                                f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}).")
        self._classes = (classes, names)
        return self._classes

    def _template_list(self) -> list[Any]:
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

        from distillctl.errors import DistillctlError

        if self.templates in (None, "", "openai"):
            return list(OPENAI_IMAGENET_TEMPLATES)
        if self.templates == "simple":
            return list(SIMPLE_IMAGENET_TEMPLATES)
        if isinstance(self.templates, str):
            raise DistillctlError(f"eval.options.zeroshot.templates: 'openai', 'simple' or a list of strings with {{}}, "
                                  f"got {self.templates!r}.")
        return [str(t).replace("{c}", "{}") for t in self.templates]  # clip_benchmark writes {c}, open_clip {}

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        import torch

        from distillctl.errors import DataError
        from distillctl.evaluation import embed_images, usable_samples, zero_shot_scores, zero_shot_weights

        _require(ctx, self.name, "encode_image", "encode_text")
        items = usable_samples(ctx.dataset, self.samples or ctx.samples)
        labels = [s.label for _, s in items]
        if any(lab is None for lab in labels):
            raise DataError(f"zeroshot needs labelled images; {ctx.dataset.describe()} has items without a label "
                            "(use a folder of class subfolders: --data folder --set data.captions=label).")
        classes, names = self._class_list(ctx, labels)
        position = {c: i for i, c in enumerate(classes)}
        target = torch.tensor([position[lab] for lab in labels])
        weights = zero_shot_weights(bundle.model, bundle.tokenizer, names, self._template_list(), ctx.family,
                                    device=ctx.device).to(ctx.device)
        feats = embed_images(bundle.model, _images(items, bundle.transform), ctx.family,
                             batch_size=self.batch_size, device=ctx.device)
        logits = 100.0 * feats.to(ctx.device) @ weights
        out = zero_shot_scores(logits.float().cpu(), target)
        out["zeroshot_images"], out["zeroshot_classes"] = float(len(items)), float(len(classes))
        return out


# --------------------------------------------------------------------------- captioning
class _Captioning:
    name = "captioning"

    def __init__(self, samples: int | None, beams: int, tokenization: str, save_predictions: str | None) -> None:
        self.samples, self.beams, self.tokenization, self.save = samples, beams, tokenization, save_predictions

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        from functools import partial

        from distillctl.evaluation import (
            all_captions,
            beam_captions,
            caption_scores,
            coco_caption_scores,
            greedy_captions,
            usable_samples,
        )

        _require(ctx, self.name, "caption_start", "caption_step")
        n = self.samples or min(ctx.samples, 200)
        if not self.samples and ctx.samples > 200:
            _note(ctx, "captioning: first 200 items (set eval.options.captioning.samples for more)")
        items = usable_samples(ctx.dataset, n)
        tok = bundle.tokenizer
        decode = greedy_captions if self.beams == 1 else partial(beam_captions, beams=self.beams)
        ids = decode(bundle.model, _images(items, bundle.transform), sot=tok.sot_token_id, eot=tok.eot_token_id,
                     max_len=tok.context_length, device=ctx.device, family=ctx.family)
        hyps = [tok.decode(x) for x in ids]
        _note(ctx, f"captioning: {'greedy' if self.beams == 1 else f'beam search ({self.beams} beams)'} decoding")
        out = caption_scores([s.caption for _, s in items], hyps)
        image_ids = [ctx.dataset.image_id(i) if hasattr(ctx.dataset, "image_id") else i for i, _ in items]
        try:
            scores, how = coco_caption_scores({iid: all_captions(s) for iid, (_, s) in zip(image_ids, items, strict=True)},
                                              dict(zip(image_ids, hyps, strict=True)), self.tokenization)
            out.update(scores)
            _note(ctx, f"caption metrics: pycocoevalcap scorers, {how} tokenisation")
        except ImportError:
            _note(ctx, "BLEU / ROUGE-L / CIDEr-D skipped: pycocoevalcap is not installed (pip install 'distillctl[eval]')")
        out["captioning_images"] = float(len(items))
        if self.save:
            folder = Path(self.save)
            folder.mkdir(parents=True, exist_ok=True)
            role = _role(bundle, ctx)
            name = "captions_results.json" if role == "student" else f"{role}_captions_results.json"
            (folder / name).write_text(json.dumps([{"image_id": iid, "caption": h}
                                                   for iid, h in zip(image_ids, hyps, strict=True)], indent=1))
        return out


# --------------------------------------------------------------------------- fidelity
class _Fidelity:
    name = "fidelity"

    def __init__(self, samples: int, batch_size: int) -> None:
        self.samples, self.batch_size = samples, batch_size

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        return {}  # a pair metric: see evaluate_pair

    def evaluate_pair(self, student: Any, teacher: Any, ctx: Any) -> dict[str, float]:
        import torch

        from distillctl.data.loader import make_batch
        from distillctl.evaluation import embed_images, embed_texts, usable_samples
        from distillctl.layerwise import HiddenStateTap, layer_pairs
        from distillctl.plugins import registry

        family = ctx.family
        splitter = registry("splitter").create(student.splitter)
        t_mods, s_mods = splitter.modules(teacher.model), splitter.modules(student.model)
        pairs = layer_pairs(t_mods, s_mods, student.extra.get("layer_map"))
        items = usable_samples(ctx.dataset, min(self.samples, ctx.samples))
        idx = [i for i, _ in items]
        sums: dict[str, list[float]] = {m: [0.0, 0.0, 0.0, 0.0] for m in pairs}  # cos sum, n, err, ref
        agree_tok = total_tok = 0
        for b in range(0, len(idx), self.batch_size):
            chunk = idx[b : b + self.batch_size]
            s_in = family.inputs(make_batch(ctx.dataset, chunk, student.transform, student.tokenizer), ctx.device)
            t_in = family.inputs(make_batch(ctx.dataset, chunk, teacher.transform, teacher.tokenizer), ctx.device)
            s_paths = [s for v in pairs.values() for s, _ in v]
            t_paths = [t for v in pairs.values() for _, t in v]
            with torch.no_grad(), HiddenStateTap(student.model, s_paths) as s_tap, \
                    HiddenStateTap(teacher.model, t_paths) as t_tap:
                s_out = family.forward(student.model, s_in)
                t_out = family.forward(teacher.model, t_in)
            for module, module_pairs in pairs.items():
                mask = family.position_mask(module, t_in)
                for s_path, t_path in module_pairs:
                    hs, ht = (_tokens(x).float() for x in (s_tap.outputs[s_path], t_tap.outputs[t_path]))
                    if hs.shape != ht.shape:
                        _note(ctx, f"fidelity/{module}: student and teacher widths differ; hidden states not compared")
                        sums[module][1] = -1
                        continue
                    if sums[module][1] < 0:
                        continue
                    valid = mask if mask is not None and mask.shape == hs.shape[:2] else torch.ones(hs.shape[:2], dtype=torch.bool)
                    valid = valid.to(hs.device)
                    cos = torch.nn.functional.cosine_similarity(hs, ht, dim=-1)[valid]
                    sums[module][0] += float(cos.sum())
                    sums[module][1] += float(valid.sum())
                    sums[module][2] += float(((hs - ht) ** 2).sum(-1)[valid].sum())
                    sums[module][3] += float((ht**2).sum(-1)[valid].sum())
            if isinstance(s_out, dict) and isinstance(t_out, dict) and "logits" in s_out and "labels" in t_out:
                labels = t_out["labels"]
                valid = labels != 0
                agree_tok += int(((s_out["logits"].argmax(-1) == t_out["logits"].argmax(-1)) & valid).sum())
                total_tok += int(valid.sum())
        out: dict[str, float] = {}
        for module, (c, n, err, ref) in sums.items():
            if n > 0:
                out[f"fidelity/{module}/cos"] = c / n
                out[f"fidelity/{module}/rel_mse"] = err / max(ref, 1e-12)
        if hasattr(family, "encode_image") and hasattr(family, "encode_text"):
            caps = [s.caption for _, s in items]
            best = []
            for bundle in (student, teacher):
                img = embed_images(bundle.model, _images(items, bundle.transform), family, device=ctx.device)
                txt = embed_texts(bundle.model, bundle.tokenizer(caps), family, device=ctx.device)
                best.append((img @ txt.T).argmax(1))
            out["top1_agreement"] = float((best[0] == best[1]).float().mean())
        if total_tok:
            out["caption_token_agreement"] = agree_tok / total_tok
        return out


def _tokens(h: Any) -> Any:
    return h.flatten(2).transpose(1, 2) if h.ndim == 4 else h


# --------------------------------------------------------------------------- efficiency
class _Efficiency:
    name = "efficiency"

    def __init__(self, batch_size: int, repeats: int) -> None:
        self.batch_size, self.repeats = batch_size, repeats
        self._seen: dict[int, dict[str, float]] = {}

    def _time(self, model: Any, inputs: Any, ctx: Any) -> float:
        import time

        import torch

        cuda = torch.device(ctx.device).type == "cuda"
        times = []
        with torch.no_grad():
            for _ in range(self.repeats + 1):
                if cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                ctx.family.forward(model, inputs)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        rest = sorted(times[1:])  # median after one warm-up
        return rest[len(rest) // 2]

    def evaluate(self, bundle: Any, ctx: Any) -> dict[str, float]:
        import torch

        from distillctl.data.loader import make_batch
        from distillctl.evaluation import usable_samples

        model, device = bundle.model, ctx.device
        items = usable_samples(ctx.dataset, self.batch_size)
        idx = [i for i, _ in items]
        inputs = ctx.family.inputs(make_batch(ctx.dataset, idx, bundle.transform, bundle.tokenizer), device)
        one = ctx.family.inputs(make_batch(ctx.dataset, idx[:1], bundle.transform, bundle.tokenizer), device)
        was = model.training
        model.eval()
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        batch_s = self._time(model, inputs, ctx)
        out: dict[str, float] = {}
        if cuda:
            out["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            _note(ctx, "peak memory: n/a on CPU (torch allocations are not measurable per model there)")
        one_s = self._time(model, one, ctx)
        model.train(was)
        n = len(idx)
        params = sum(p.numel() for p in model.parameters())
        out.update({"params_m": params / 1e6, "forward_ms_per_image": 1000 * batch_s / n, "images_per_s": n / batch_s,
                    "latency_ms": 1000 * one_s, "batch_size": float(n),
                    "size_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20})
        out.update(self._module_params(bundle))
        path = Path(str(bundle.weights))
        if path.is_file():
            out["file_mb"] = path.stat().st_size / 2**20
        _note(ctx, f"efficiency: full forward on {device}, latency at batch 1, throughput at batch {n}, "
                   f"median of {self.repeats} after a warm-up")
        self._seen[id(bundle)] = out
        return out

    def _module_params(self, bundle: Any) -> dict[str, float]:
        """Parameters per module: the top-level tower a module's stacks live in (``visual``, ``text``...), or
        its layers only when several modules share one tower."""
        from distillctl.plugins import registry

        try:
            modules = registry("splitter").create(bundle.splitter).modules(bundle.model)
        except Exception:  # noqa: BLE001 - per-module counts are a bonus; total params are always shown
            return {}
        named = dict(bundle.model.named_modules())
        towers = {m.name: {s.name.split(".")[0] for s in m.stacks} for m in modules}
        out = {}
        for m in modules:
            shared = any(towers[m.name] & t for o, t in towers.items() if o != m.name)
            roots = [s.layer(i) for s in m.stacks for i in range(s.depth)] if shared else sorted(towers[m.name])
            out[f"params_m/{m.name}"] = sum(p.numel() for r in roots if r in named for p in named[r].parameters()) / 1e6
        return out

    def evaluate_pair(self, student: Any, teacher: Any, ctx: Any) -> dict[str, float]:
        s, t = self._seen.get(id(student)), self._seen.get(id(teacher))
        if not s or not t:
            return {}
        return {"compression": t["params_m"] / max(s["params_m"], 1e-12),
                "speedup": t["forward_ms_per_image"] / max(s["forward_ms_per_image"], 1e-12),
                "latency_speedup": t["latency_ms"] / max(s["latency_ms"], 1e-12)}


# --------------------------------------------------------------------------- factories
def retrieval(samples: int = 0, group: int = -1, ks: list[int] | None = None) -> _Retrieval:
    """Image<->text recall@1/5/10 over the whole set, all captions (clip_benchmark protocol); on shapes also
    R@1 within groups of 100 and teacher-forced token accuracy (group: -1 auto, 0 off)."""
    return _Retrieval(samples or None, group, tuple(ks or (1, 5, 10)))


def zeroshot(samples: int = 0, classnames: Any = None, templates: Any = "openai", batch_size: int = 64) -> _ZeroShot:
    """Zero-shot classification with open_clip's helpers (classnames: folder | imagenet | list; templates: openai |
    simple | list): top-1/top-5, mean per-class recall."""
    return _ZeroShot(samples or None, classnames, templates, batch_size)


def captioning(samples: int = 0, beams: int = 1, tokenization: str = "auto", save_predictions: str = "") -> _Captioning:
    """Own decoder (greedy, or beam search with beams > 1): BLEU-1..4, ROUGE-L, CIDEr-D (pycocoevalcap), exact match."""
    from distillctl.errors import DistillctlError

    if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
        raise DistillctlError(f"eval.options.captioning.beams must be an integer >= 1, got {beams!r}.")
    if tokenization not in ("auto", "ptb", "python"):
        raise DistillctlError(f"eval.options.captioning.tokenization: auto, ptb or python, got {tokenization!r}.")
    return _Captioning(samples or None, beams, tokenization, save_predictions or None)


def fidelity(samples: int = 256, batch_size: int = 32) -> _Fidelity:
    """Student vs teacher: hidden-state cosine / relative MSE per module at the mapped layers; top-1 match and
    caption-token agreement."""
    return _Fidelity(samples, batch_size)


def efficiency(batch_size: int = 32, repeats: int = 3) -> _Efficiency:
    """Parameters (total, per module), size, latency, throughput, peak memory (CUDA); compression and speed-up."""
    return _Efficiency(batch_size, repeats)


@hookimpl
def register_evaluators(register: Register) -> None:
    register("retrieval", retrieval)
    register("zeroshot", zeroshot, aliases=("zero-shot",))
    register("captioning", captioning, aliases=("caption",))
    register("fidelity", fidelity)
    register("efficiency", efficiency)
