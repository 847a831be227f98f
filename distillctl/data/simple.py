"""A word tokenizer and a plain image transform, for models that bring neither (public).

The bundled ``quickstart`` teacher uses both, with the ``shapes`` captions' words
(``distillctl.data.VOCAB_WORDS``); so can a plugin's model (the toy family in ``plugins/``). Both satisfy
the :class:`~distillctl.interfaces.Teacher` bundle's ``tokenizer`` / ``transform`` contracts, import
torch only when called, and pickle (DataLoader workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

SPECIALS = ("<pad>", "<sot>", "<eot>", "<unk>")


class WordTokenizer:
    """Word-level tokenizer: ``<pad>``=0, ``<sot>``=1, ``<eot>``=2, ``<unk>``=3, then the words.

    Callable like open_clip's tokenizers: a list of captions in, a ``[B, context_length]`` long
    tensor out (pad id 0, so open_clip's CoCa masks and ``CoCaLoss(pad_id=0)`` work unchanged).
    """

    def __init__(self, words: Sequence[str], context_length: int = 18, vocab_size: int = 32) -> None:
        self.itos = [*SPECIALS, *words]
        if len(self.itos) > vocab_size:
            raise ValueError(f"{len(self.itos)} symbols do not fit vocab_size {vocab_size}")
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.pad_token_id, self.sot_token_id, self.eot_token_id, self.unk_token_id = 0, 1, 2, 3

    def encode(self, text: str) -> list[int]:
        words = text.lower().replace(",", " ").replace(".", " ").split()
        ids = [self.stoi.get(w, self.unk_token_id) for w in words][: self.context_length - 2]
        return [self.sot_token_id, *ids, self.eot_token_id]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        import torch

        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode(t) for t in texts]  # one tensor built from padded rows (not one per caption)
        return torch.tensor([ids + [self.pad_token_id] * (self.context_length - len(ids)) for ids in rows],
                            dtype=torch.long).reshape(len(rows), self.context_length)

    def decode(self, ids: Sequence[int]) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i == self.eot_token_id:
                break
            if i in (self.pad_token_id, self.sot_token_id):
                continue
            words.append(self.itos[i] if i < len(self.itos) else "<unk>")
        return " ".join(words)

    def config(self) -> dict[str, Any]:
        return {"type": "words", "words": self.itos[len(SPECIALS) :], "context_length": self.context_length,
                "vocab_size": self.vocab_size}


class ImageTransform:
    """PIL image -> normalised ``[3, S, S]`` float tensor (resize only when the size differs).

    A plain function of the pixels, picklable for DataLoader workers; equivalent to open_clip's eval
    transform for square inputs already at ``size``.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import Image as PILImage

        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), PILImage.BICUBIC)
        if self._norm is None:  # built once: a batch of 64 transforms in 3.4 ms instead of 4.8
            self._norm = torch.tensor(self.mean).view(3, 1, 1), torch.tensor(self.std).view(3, 1, 1)
        mean, std = self._norm
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)
        return x.sub_(mean).div_(std)  # the same float operations, in place


__all__ = ["SPECIALS", "ImageTransform", "WordTokenizer"]
