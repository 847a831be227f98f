"""Evaluation primitives shared by the evaluators, the quickstart training script and ``distill``.

* retrieval R@1 within consecutive groups (the FEASIBILITY protocol: 1,000 images as 10 groups of
  100; chance 0.01), image->text and text->image, plus a "text-match" variant that also counts a
  retrieved caption identical to the truth;
* teacher-forced next-token accuracy on non-pad labels;
* our own greedy caption decoder (open_clip's ``generate()`` needs an old ``transformers``): image
  features are computed once and the text tower + decoder re-run on the growing prefix.

Models are reached only through their family's evaluation forwards (``encode_image``,
``encode_text``, ``caption_logits``, ``caption_start`` / ``caption_step``), so every function here
works for any family that provides them. ``family=None`` means CoCa (the quickstart training script).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class Encoded:
    image_features: torch.Tensor  # [N, E] L2-normalised
    text_features: torch.Tensor  # [N, E] L2-normalised
    correct_tokens: int
    total_tokens: int


def collect(dataset: Any, indices: Sequence[int], transform: Callable[..., torch.Tensor], tokenizer: Any) -> tuple[
    torch.Tensor, torch.Tensor, list[str]
]:
    """Images ``[N,3,H,W]``, token ids ``[N,L]`` and captions of ``dataset[indices]``; unusable items
    (``SkipItem``) are left out, and a selection with none usable is a one-line DataError."""
    from distillctl.data import SkipItem
    from distillctl.errors import DataError

    samples = []
    for i in indices:
        try:
            samples.append(dataset[i])
        except SkipItem:
            continue
    if not samples:
        raise DataError(f"{dataset.describe()}: no usable item among the {len(indices)} selected.")
    images = torch.stack([transform(s.image) for s in samples])
    captions = [s.caption for s in samples]
    return images, tokenizer(captions), captions


def _coca_family() -> Any:
    from distillctl.coca.family import CocaFamily

    return CocaFamily()


@torch.no_grad()
def encode(
    model: torch.nn.Module,
    images: torch.Tensor,
    texts: torch.Tensor,
    *,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    family: Any = None,
) -> Encoded:
    """Features for retrieval (and teacher-forced token accuracy where the family has caption logits)."""
    family = family or _coca_family()
    was_training = model.training
    model.eval()
    dev = torch.device(device)
    has_logits = hasattr(family, "caption_logits")
    img_f, txt_f, correct, total = [], [], 0, 0
    for i in range(0, len(images), batch_size):
        im = images[i : i + batch_size].to(dev)
        tx = texts[i : i + batch_size].to(dev)
        with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            img_f.append(F.normalize(family.encode_image(model, im).float(), dim=-1).cpu())
            txt_f.append(F.normalize(family.encode_text(model, tx).float(), dim=-1).cpu())
            if has_logits:
                logits, labels = family.caption_logits(model, {"image": im, "text": tx})  # [B, L-1, V], [B, L-1]
                valid = labels != 0
                correct += int(((logits.argmax(-1) == labels) & valid).sum())
                total += int(valid.sum())
    model.train(was_training)
    return Encoded(torch.cat(img_f), torch.cat(txt_f), correct, total if has_logits else -1)


def retrieval_r1(
    image_features: torch.Tensor, text_features: torch.Tensor, captions: Sequence[str] | None = None, group: int = 100
) -> dict[str, float]:
    """R@1 within consecutive groups of ``group`` items (image i's caption is text i)."""
    n = (len(image_features) // group) * group
    if n == 0:
        group = n = len(image_features)
    i2t = t2i = i2t_match = 0
    for g in range(0, n, group):
        sim = image_features[g : g + group] @ text_features[g : g + group].T  # [G, G]
        target = torch.arange(sim.shape[0])
        best_t = sim.argmax(1)
        i2t += int((best_t == target).sum())
        t2i += int((sim.argmax(0) == target).sum())
        if captions is not None:
            caps = captions[g : g + group]
            i2t_match += sum(caps[int(j)] == caps[k] for k, j in enumerate(best_t))
    out = {"i2t_r1": i2t / n, "t2i_r1": t2i / n}
    if captions is not None:
        out["i2t_r1_textmatch"] = i2t_match / n
    return out


@torch.no_grad()
def greedy_captions(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    sot: int,
    eot: int,
    max_len: int,
    min_len: int = 2,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    family: Any = None,
) -> list[list[int]]:
    """Greedy decoding through the family's ``caption_start`` / ``caption_step``; token ids after <sot> up to <eot>."""
    family = family or _coca_family()
    was_training = model.training
    model.eval()
    dev = torch.device(device)
    results: list[list[int]] = []
    for i in range(0, len(images), batch_size):
        im = images[i : i + batch_size].to(dev)
        state = family.caption_start(model, im)  # image features once, reused at every step
        out = torch.full((im.shape[0], 1), sot, dtype=torch.long, device=dev)
        done = torch.zeros(im.shape[0], dtype=torch.bool, device=dev)
        for _ in range(max_len - 1):
            logits = family.caption_step(model, state, out)  # [B, V]
            if out.shape[1] < min_len:
                logits[:, eot] = -float("inf")
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)  # pad after <eot>
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == eot
            if bool(done.all()):
                break
        for row in out[:, 1:].tolist():
            ids = []
            for t in row:
                if t == eot or t == 0:
                    break
                ids.append(t)
            results.append(ids)
    model.train(was_training)
    return results


def caption_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Exact match and position-wise word accuracy (divided by the longer length)."""
    exact = sum(r == h for r, h in zip(references, hypotheses, strict=False))
    word = 0.0
    for r, h in zip(references, hypotheses, strict=False):
        rw, hw = r.split(), h.split()
        word += sum(a == b for a, b in zip(rw, hw, strict=False)) / max(len(rw), len(hw), 1)
    n = max(len(references), 1)
    return {"caption_exact": exact / n, "caption_word_acc": word / n}


def caption_metrics(
    model: torch.nn.Module, images: torch.Tensor, references: Sequence[str], tokenizer: Any,
    *, device: str | torch.device = "cpu", family: Any = None,
) -> dict[str, float]:
    """Greedy-decode ``images`` and score the captions against ``references``."""
    ids = greedy_captions(model, images, sot=tokenizer.sot_token_id, eot=tokenizer.eot_token_id,
                          max_len=tokenizer.context_length, device=device, family=family)
    return caption_scores(references, [tokenizer.decode(x) for x in ids])


def full_eval(
    model: torch.nn.Module,
    dataset: Any,
    transform: Callable[..., torch.Tensor],
    tokenizer: Any,
    *,
    samples: int = 1000,
    captions: int = 0,
    group: int = 100,
    device: str | torch.device = "cpu",
    family: Any = None,
) -> dict[str, float]:
    """Retrieval R@1 (within groups of ``group``), teacher-forced token accuracy, and greedy captions
    on the first ``captions`` samples (0 = skip decoding)."""
    n = min(samples, len(dataset))
    images, texts, caps = collect(dataset, range(n), transform, tokenizer)
    enc = encode(model, images, texts, device=device, family=family)
    out = retrieval_r1(enc.image_features, enc.text_features, caps, group=group)
    if enc.total_tokens >= 0:
        out["tf_token_acc"] = enc.correct_tokens / max(enc.total_tokens, 1)
    if captions:
        out.update(caption_metrics(model, images[:captions], caps[:captions], tokenizer, device=device, family=family))
    return out
