"""open_clip's CLIP BPE tokenizer, wrapped to the :class:`distillctl.interfaces.Tokenizer` contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from distillctl.errors import ConfigError


class OpenClipTokenizer:
    """open_clip's CLIP BPE tokenizer at the model's context length (never the 77 default).

    Satisfies :class:`distillctl.interfaces.Tokenizer`: ``__call__`` returns ``[B, context_length]`` long
    ids (pad 0); ``decode`` drops the start token, stops at the end token and ignores pads.
    """

    def __init__(self, context_length: int, vocab_size: int = 49408) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self._tok = SimpleTokenizer(context_length=context_length)
        self.context_length = int(context_length)
        self.vocab_size = int(vocab_size)
        self.sot_token_id = int(self._tok.sot_token_id)
        self.eot_token_id = int(self._tok.eot_token_id)
        self.pad_token_id = 0

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return self._tok(list(texts), context_length=self.context_length).long()

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out: list[int] = []
        for i in ids:
            i = int(i)
            if i == self.eot_token_id:
                break
            if i in (self.sot_token_id, self.pad_token_id) or not 0 <= i < len(self._tok.decoder):
                continue
            out.append(i)
        return " ".join(self._tok.decode(out).split())


def make_tokenizer(model_cfg: dict[str, Any]) -> OpenClipTokenizer:
    """The open_clip tokenizer for ``model_cfg`` (context length from ``text_cfg``)."""
    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        raise ConfigError(
            [f"text_cfg.hf_tokenizer_name={text_cfg['hf_tokenizer_name']!r}: HF tokenizers are not supported; "
             "use a CoCa config with open_clip's CLIP tokenizer"]
        )
    vocab = int(text_cfg.get("vocab_size", 49408))
    if vocab < 49408:
        raise ConfigError(
            [f"text_cfg.vocab_size={vocab} is smaller than the open_clip tokenizer's 49408 ids; "
             "use vocab_size 49408 (or a teacher plugin that ships its own tokenizer)"]
        )
    return OpenClipTokenizer(int(text_cfg.get("context_length", 77)), vocab)


__all__ = ["OpenClipTokenizer", "make_tokenizer"]
