"""Evaluation primitives shared by the evaluators, the quickstart training script and ``distill``.

* retrieval R@1 within consecutive groups (the FEASIBILITY protocol: 1,000 images as 10 groups of
  100; chance 0.01), image->text and text->image, plus a "text-match" variant that also counts a
  retrieved caption identical to the truth;
* teacher-forced next-token accuracy on non-pad labels;
* our own greedy caption decoder (open_clip's ``generate()`` needs an old ``transformers``): image
  features are computed once and the text tower + decoder re-run on the growing prefix.

Models are reached only through their family's evaluation forwards (``encode_image``,
``encode_text``, ``caption_logits``, ``caption_start`` / ``caption_step``), so every function here
works for any family that provides them; ``family`` is always given (no model library is assumed here).
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


@torch.no_grad()
def encode(
    model: torch.nn.Module,
    images: torch.Tensor,
    texts: torch.Tensor,
    *,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    family: Any,
) -> Encoded:
    """Features for retrieval (and teacher-forced token accuracy where the family has caption logits)."""
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
    family: Any,
) -> list[list[int]]:
    """Greedy decoding through the family's ``caption_start`` / ``caption_step``; token ids after <sot> up to <eot>."""
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
    *, family: Any, device: str | torch.device = "cpu",
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
    family: Any,
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


# =========================================================================== ecosystem protocols
# Whole-set retrieval as LAION's clip_benchmark computes it, zero-shot classification through
# open_clip's own helpers, greedy / beam decoding, COCO caption metrics (pycocoevalcap), fidelity
# of a student to its teacher, and efficiency. Skipped items are counted by :class:`EvalData`.

RETRIEVAL_KS = (1, 5, 10)
MIN_SAMPLES = {"retrieval": 100, "zeroshot": 100, "captioning": 20}  # fewer: the metric is flagged


class EvalData:
    """A dataset seen by the evaluators: unusable items (``SkipItem``) are counted once each, by index,
    and loaded samples are cached (up to ``cache`` items) so that student and teacher read them once."""

    def __init__(self, dataset: Any, cache: int = 2048) -> None:
        self.dataset = dataset
        self.name = getattr(dataset, "name", "data")
        self.skipped: dict[int, str] = {}
        self._cache: dict[int, Any] = {}
        self._cache_size = cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        from distillctl.data import SkipItem

        if index in self._cache:
            return self._cache[index]
        if index in self.skipped:
            raise SkipItem(self.skipped[index])
        try:
            sample = self.dataset[index]
        except SkipItem as exc:
            self.skipped[index] = exc.reason
            raise
        if len(self._cache) < self._cache_size:
            self._cache[index] = sample
        return sample

    def describe(self) -> str:
        return self.dataset.describe()

    def __getattr__(self, name: str) -> Any:  # image_id(), objects(), ... of the wrapped source
        return getattr(self.__dict__["dataset"], name)

    def skip_summary(self) -> str | None:
        """``skipped N images (first: reason)`` or None."""
        if not self.skipped:
            return None
        first = self.skipped[min(self.skipped)]
        return f"skipped {len(self.skipped)} image{'s' if len(self.skipped) != 1 else ''} (first: {first})"


def usable_samples(dataset: Any, n: int) -> list[tuple[int, Any]]:
    """``(index, Sample)`` of the usable items among the first ``n`` of ``dataset`` (skips counted by
    :class:`EvalData`); none usable is a one-line DataError."""
    from distillctl.data import SkipItem
    from distillctl.errors import DataError

    n = min(n, len(dataset))
    out = []
    for i in range(n):
        try:
            out.append((i, dataset[i]))
        except SkipItem:
            continue
    if not out:
        raise DataError(f"{dataset.describe()}: no usable item among the {n} selected.")
    return out


def all_captions(sample: Any) -> list[str]:
    return list(sample.captions) or [sample.caption]


@torch.no_grad()
def embed_images(model: torch.nn.Module, images: torch.Tensor, family: Any, *, batch_size: int = 250,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """L2-normalised image embeddings ``[N, E]`` (fp32, on the CPU) through ``family.encode_image``."""
    dev = torch.device(device)
    out = [F.normalize(family.encode_image(model, images[i : i + batch_size].to(dev)).float(), dim=-1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def embed_texts(model: torch.nn.Module, tokens: torch.Tensor, family: Any, *, batch_size: int = 250,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """L2-normalised text embeddings ``[N, E]`` (fp32, on the CPU) through ``family.encode_text``."""
    dev = torch.device(device)
    out = [F.normalize(family.encode_text(model, tokens[i : i + batch_size].to(dev)).float(), dim=-1).cpu()
           for i in range(0, len(tokens), batch_size)]
    return torch.cat(out)


def recall_at_k(scores: torch.Tensor, positive_pairs: torch.Tensor, k: int, batch_size: int = 1024) -> torch.Tensor:
    """Per query (row of ``scores`` ``[Q, N]``): 1.0 when a positive is among its top ``k``, else 0.0.

    The recall@k of CLIP papers and of ``clip_benchmark`` (``recall_at_k(...) > 0``): the same
    ``torch.topk`` over the same score rows, so ties break the same way.
    """
    k = min(k, scores.shape[1])
    hits = []
    for s in range(0, scores.shape[0], batch_size):
        top = torch.topk(scores[s : s + batch_size], k, dim=1)[1]  # [q, k]
        hits.append(positive_pairs[s : s + batch_size].gather(1, top).any(dim=1).float())
    return torch.cat(hits)


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, text_image_index: Sequence[int],
                     ks: Sequence[int] = RETRIEVAL_KS) -> dict[str, float]:
    """Whole-set retrieval with several captions per image (COCO 5k / Flickr30k 1k protocol).

    ``text_image_index[j]`` is the image of caption ``j``. Names as ``clip_benchmark``'s:
    ``image_retrieval_recall@k`` is text->image (each caption finds its image among all images),
    ``text_retrieval_recall@k`` is image->text (an image's top k captions hold one of its own).
    """
    scores = text_features @ image_features.T  # [T, I]
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), torch.as_tensor(list(text_image_index), dtype=torch.long)] = True
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = recall_at_k(scores, positive, k).mean().item()
        out[f"text_retrieval_recall@{k}"] = recall_at_k(scores.T, positive.T, k).mean().item()
    return out


class _EncodeTextAdapter:
    """What open_clip's ``build_zero_shot_classifier`` calls (``model.encode_text(t, normalize=True)``),
    routed through the family."""

    def __init__(self, model: torch.nn.Module, family: Any) -> None:
        self.model, self.family = model, family

    def encode_text(self, text: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        f = self.family.encode_text(self.model, text).float()
        return F.normalize(f, dim=-1) if normalize else f


def zero_shot_weights(model: torch.nn.Module, tokenizer: Any, classnames: Sequence[str], templates: Sequence[Any],
                      family: Any, device: str | torch.device = "cpu") -> torch.Tensor:
    """Class embeddings ``[E, C]`` from open_clip's own ``build_zero_shot_classifier``."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    return build_zero_shot_classifier(_EncodeTextAdapter(model, family), tokenizer, list(classnames), list(templates),
                                      num_classes_per_batch=10, device=device).float().cpu()


def zero_shot_scores(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """top-1 / top-5 accuracy and mean per-class recall (``clip_benchmark``'s ``acc1``, ``acc5``,
    ``mean_per_class_recall``: the recall of each class present in ``target``, averaged)."""
    k = min(5, logits.shape[1])
    pred = logits.topk(k, 1, True, True)[1].t()  # [k, N]
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    top1 = pred[0]
    recalls = [int((top1[target == c] == c).sum()) / int((target == c).sum()) for c in target.unique().tolist()]
    return {"zeroshot_top1": float(correct[:1].reshape(-1).float().sum()) / n,
            "zeroshot_top5": float(correct[:k].reshape(-1).float().sum()) / n,
            "zeroshot_mean_per_class_recall": sum(recalls) / len(recalls)}


# --------------------------------------------------------------------------- decoding
def _repeat_state(family: Any, state: Any, n: int) -> Any:
    """The decoding state of each image repeated ``n`` times (beam search): the family's
    ``caption_repeat(state, n)`` when it has one, else every tensor in the state repeated along dim 0."""
    if hasattr(family, "caption_repeat"):
        return family.caption_repeat(state, n)

    def rep(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.repeat_interleave(n, dim=0)
        if isinstance(x, (tuple, list)):
            return type(x)(rep(v) for v in x)
        if isinstance(x, dict):
            return {k: rep(v) for k, v in x.items()}
        return x

    return rep(state)


@torch.no_grad()
def beam_captions(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    sot: int,
    eot: int,
    max_len: int,
    beams: int = 3,
    min_len: int = 2,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    family: Any,
) -> list[list[int]]:
    """Beam search through ``caption_start`` / ``caption_step``; token ids after <sot> up to <eot>.

    A hypothesis is scored by its summed log-probability divided by its length (tokens after <sot>,
    <eot> included), as open_clip's ``generate`` does with ``length_penalty=1``. An image is done once
    ``beams`` hypotheses have ended; at ``max_len`` the open beams are ended. With ``beams=1`` this
    is greedy decoding.
    """
    if beams < 1:
        raise ValueError("beams must be at least 1")
    was_training = model.training
    model.eval()
    dev = torch.device(device)
    results: list[list[int]] = []
    K = beams
    for i in range(0, len(images), batch_size):
        im = images[i : i + batch_size].to(dev)
        B = im.shape[0]
        state = _repeat_state(family, family.caption_start(model, im), K)  # B*K rows, beams of an image adjacent
        prefix = torch.full((B * K, 1), sot, dtype=torch.long, device=dev)
        scores = torch.full((B, K), -float("inf"), device=dev)
        scores[:, 0] = 0.0  # the K beams start identical: only one may expand
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
        done = [False] * B
        for _ in range(max_len - 1):
            logp = torch.log_softmax(family.caption_step(model, state, prefix).float(), dim=-1)  # [B*K, V]
            V = logp.shape[-1]
            if prefix.shape[1] < min_len:
                logp[:, eot] = -float("inf")
            cand = (scores.reshape(B * K, 1) + logp).reshape(B, K * V)
            top_s, top_i = cand.topk(min(2 * K, K * V), dim=1)
            new_rows, new_tokens, new_scores = [], [], []
            for b in range(B):
                keep: list[tuple[int, int, float]] = []
                if not done[b]:
                    for s, idx in zip(top_s[b].tolist(), top_i[b].tolist(), strict=True):
                        beam, tok = divmod(idx, V)
                        if s == -float("inf"):
                            break
                        if tok == eot:
                            seq = prefix[b * K + beam, 1:].tolist()
                            finished[b].append((s / (len(seq) + 1), seq))
                            if len(finished[b]) >= K:
                                break
                        else:
                            keep.append((beam, tok, s))
                            if len(keep) == K:
                                break
                    if len(finished[b]) >= K or not keep:
                        done[b] = True
                while len(keep) < K:  # pad with dead beams
                    keep.append((0, 0, -float("inf")))
                for beam, tok, s in keep:
                    new_rows.append(b * K + beam)
                    new_tokens.append(tok)
                    new_scores.append(s)
            if all(done):
                break
            rows = torch.tensor(new_rows, device=dev)
            prefix = torch.cat([prefix[rows], torch.tensor(new_tokens, device=dev)[:, None]], 1)
            scores = torch.tensor(new_scores, device=dev).reshape(B, K)
        for b in range(B):
            if not done[b]:  # max_len reached: the open beams end here
                for k in range(K):
                    s = float(scores[b, k])
                    if s > -float("inf"):
                        seq = prefix[b * K + k, 1:].tolist()
                        finished[b].append((s / len(seq), seq))
            best = max(finished[b], key=lambda h: h[0])[1] if finished[b] else []
            results.append([t for t in best if t not in (0, eot)])
    model.train(was_training)
    return results


# --------------------------------------------------------------------------- caption metrics
# PTBTokenizer (pycocoevalcap) drops these tokens after Stanford PTB tokenisation
PTB_PUNCTUATIONS = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                    "...", ";")
PYTHON_TOKENISATION = "python (lower-case; punctuation split off and dropped as PTBTokenizer does; no Java)"


def python_tokenize(text: str) -> str:
    """The documented fallback when Java (for PTBTokenizer) is absent: lower-case, split words and
    punctuation (keeping the clitics ``'s``, ``n't``... attached to a token of their own, like PTB), drop
    the tokens PTBTokenizer drops (:data:`PTB_PUNCTUATIONS`), brackets and quotes."""
    import re

    t = text.lower().replace("\n", " ")
    t = re.sub(r"(\w)(n't)\b", r"\1 \2", t)
    t = re.sub(r"(\w)('s|'re|'ve|'ll|'d|'m)\b", r"\1 \2", t)
    tokens = re.findall(r"n't|'\w+|\w+(?:[.,]\w+)*|\.\.\.|--|[^\w\s]", t)
    drop = set(PTB_PUNCTUATIONS) | {"(", ")", "{", "}", "[", "]", '"'}
    return " ".join(tok for tok in tokens if tok not in drop)


def tokenize_captions(captions: dict[Any, list[str]], tokenization: str = "auto") -> tuple[dict[Any, list[str]], str]:
    """``{id: [caption]}`` tokenised for the COCO scorers: pycocoevalcap's ``PTBTokenizer`` (Java) when
    ``tokenization`` is ``ptb``, or ``auto`` and Java is on PATH; else :func:`python_tokenize`."""
    import shutil

    use_ptb = tokenization == "ptb" or (tokenization == "auto" and shutil.which("java") is not None)
    if use_ptb:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        with _quiet_fd(2):  # Java prints "PTBTokenizer tokenized N tokens ..." on stderr
            tokens = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
        return tokens, "ptb (Java)"
    return {k: [python_tokenize(c) for c in v] for k, v in captions.items()}, PYTHON_TOKENISATION


class _quiet_fd:
    """Send an OS-level file descriptor (a child process's output) to /dev/null for a ``with`` block."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        import os
        import sys

        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.saved = os.dup(self.fd)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self.fd)
        os.close(null)

    def __exit__(self, *exc: object) -> None:
        import os

        os.dup2(self.saved, self.fd)
        os.close(self.saved)


def coco_caption_scores(references: dict[Any, list[str]], hypotheses: dict[Any, str],
                        tokenization: str = "auto") -> tuple[dict[str, float], str]:
    """BLEU-1..4, ROUGE-L and CIDEr-D from pycocoevalcap's scorers (``Cider`` is CIDEr-D); returns
    ``(metrics, tokenisation used)``. Raises ImportError when pycocoevalcap is missing."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    both = {**{("r", k): v for k, v in references.items()}, **{("h", k): [v] for k, v in hypotheses.items()}}
    tok, how = tokenize_captions(both, tokenization)
    gts = {k: tok[("r", k)] for k in references}
    res = {k: tok[("h", k)] for k in hypotheses}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"bleu_{i + 1}": float(b) for i, b in enumerate(bleu)}
    out.update({"rouge_l": float(rouge), "cider_d": float(cider)})
    return out, how
