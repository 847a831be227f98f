"""A toy two-tower model in plain torch: image tower (patchify + blocks) and text tower (embedding + blocks).

Both towers end in L2-normalised embeddings of the same size (CLIP-style). The blocks of a tower are
an ``nn.ModuleList`` (``image.blocks`` / ``text.blocks``) and each block returns the hidden state
``[B, L, D]``: exactly what distillctl's layer contract asks of a splitter's layer paths.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CONFIG: dict[str, Any] = {
    "image_size": 64,
    "patch_size": 8,
    "width": 64,
    "heads": 4,
    "image_layers": 4,
    "text_layers": 4,
    "embed_dim": 32,
    "vocab_size": 32,
    "context_length": 18,
}


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, h, L, d/h]
        mask = None if valid is None else valid[:, None, None, :]  # [B, 1, 1, L]: True = may attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x -> x + attn(ln(x)) -> x + mlp(ln(x))``; returns ``[B, L, D]``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), valid)
        return x + self.mlp(self.ln_2(x))


class ImageTower(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        w, grid = cfg["width"], cfg["image_size"] // cfg["patch_size"]
        self.patchify = nn.Conv2d(3, w, kernel_size=cfg["patch_size"], stride=cfg["patch_size"])
        self.pos = nn.Parameter(torch.randn(grid * grid, w) * 0.02)
        self.blocks = nn.ModuleList(Block(w, cfg["heads"]) for _ in range(cfg["image_layers"]))
        self.ln = nn.LayerNorm(w)
        self.proj = nn.Linear(w, cfg["embed_dim"], bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patchify(images).flatten(2).transpose(1, 2) + self.pos  # [B, L, D]
        for block in self.blocks:
            x = block(x)
        return self.proj(self.ln(x).mean(1))  # [B, E]


class TextTower(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        w = cfg["width"]
        self.token = nn.Embedding(cfg["vocab_size"], w)
        self.pos = nn.Parameter(torch.randn(cfg["context_length"], w) * 0.02)
        self.blocks = nn.ModuleList(Block(w, cfg["heads"]) for _ in range(cfg["text_layers"]))
        self.ln = nn.LayerNorm(w)
        self.proj = nn.Linear(w, cfg["embed_dim"], bias=False)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        valid = text != 0  # [B, L]: pad id 0
        x = self.token(text) + self.pos[: text.shape[1]]  # [B, L, D]
        for block in self.blocks:
            x = block(x, valid)
        x = self.ln(x) * valid[..., None]
        return self.proj(x.sum(1) / valid.sum(1, keepdim=True).clamp_min(1))  # masked mean [B, E]


class ToyTwoTower(nn.Module):
    """``forward(image, text) -> {"image_features", "text_features", "logit_scale"}`` (features normalised)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(cfg)
        self.image = ImageTower(cfg)
        self.text = TextTower(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(images), dim=-1)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(text), dim=-1)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_features": self.encode_image(image), "text_features": self.encode_text(text),
                "logit_scale": self.logit_scale.exp()}


def build(cfg: dict[str, Any], device: Any = "cpu", seed: int | None = None) -> ToyTwoTower:
    """A fresh model; ``seed`` makes the random init reproducible without touching the global RNG."""
    full = {**DEFAULT_CONFIG, **cfg}
    if seed is None:
        with torch.device(device):
            return ToyTwoTower(full)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ToyTwoTower(full)  # init on the CPU so the seed means the same everywhere
    return model.to(device)
