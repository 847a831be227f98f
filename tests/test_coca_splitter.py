"""The ``coca`` splitter against real hooked open_clip CoCa outputs (tiny configs, vocab 64)."""

from __future__ import annotations

import pytest
import torch

from distillctl.coca.models import build_coca, tiny_config
from distillctl.coca.splitter import CocaSplitter, layer_width, vision_grid
from distillctl.errors import DistillctlError
from distillctl.layerwise import HiddenStateTap
from distillctl.plugins import registry

VOCAB = 64


def _tokens(batch: int, ctx: int, lengths: list[int], seed: int = 0) -> torch.Tensor:
    """[B, ctx] ids: sot=1 ... eot=2 then pads (0); ``lengths`` counts sot+words+eot."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(batch, ctx, dtype=torch.long)
    for b, n in enumerate(lengths):
        out[b, 0] = 1
        out[b, 1 : n - 1] = torch.randint(3, VOCAB, (n - 2,), generator=g)
        out[b, n - 1] = 2
    return out


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_coca(tiny_config(vision_layers=3, text_layers=2, decoder_layers=2, vocab_size=VOCAB)).eval()


def test_registered_splitter_lists_modules_and_depths(model: torch.nn.Module) -> None:
    splitter = registry("splitter").create("coca")
    mods = {m.name: m for m in splitter.modules(model)}
    assert list(mods) == ["vision", "text", "multimodal"]
    assert [(s.name, s.depth) for s in mods["vision"].stacks] == [("visual.transformer.resblocks", 3)]
    assert [(s.name, s.depth) for s in mods["text"].stacks] == [("text.transformer.resblocks", 2)]
    assert [(s.name, s.depth) for s in mods["multimodal"].stacks] == [
        ("text_decoder.resblocks", 2),
        ("text_decoder.cross_attn", 2),
    ]
    assert mods["multimodal"].stacks[1].layer(1) == "text_decoder.cross_attn.1"


def test_hooked_hidden_states_have_the_lengths_the_masks_promise(model: torch.nn.Module) -> None:
    splitter = CocaSplitter()
    ctx = 32
    text = _tokens(3, ctx, [5, 9, ctx])  # one caption fills the whole context
    image = torch.randn(3, 3, 64, 64)
    modules = splitter.modules(model)
    paths = [s.layer(i) for m in modules for s in m.stacks for i in range(s.depth)]
    with torch.no_grad(), HiddenStateTap(model, paths) as tap:
        model(image, text)
    assert set(tap.outputs) == set(paths)
    grid = vision_grid(model)[0]
    for m in modules:
        mask = splitter.position_mask(m.name, text)
        for s in m.stacks:
            for i in range(s.depth):
                h = tap.outputs[s.layer(i)]
                assert h.shape[0] == 3 and h.shape[2] == layer_width(model, s.layer(i))
                if mask is None:
                    assert h.shape[1] == 1 + grid[0] * grid[1]  # CLS + 4x4 patches
                else:
                    assert mask.shape == h.shape[:2], (m.name, s.name)
    text_mask = splitter.position_mask("text", text)
    assert text_mask.shape == (3, ctx + 1)
    assert text_mask[:, -1].all()  # the appended CLS always counts
    assert text_mask[0].sum() == 5 + 1 and text_mask[2].all()
    dec_mask = splitter.position_mask("multimodal", text)
    assert dec_mask.shape == (3, ctx - 1)
    assert dec_mask[0].tolist() == [True] * 4 + [False] * (ctx - 5)  # predicts tokens 1..4 (words + eot)
    assert splitter.position_mask("vision", text) is None


def test_text_cls_is_last_and_decoder_sees_l_minus_1(model: torch.nn.Module) -> None:
    """The CLS state sits at the end of the text stream: it is what the text pooler reads."""
    text = _tokens(2, 32, [6, 7])
    last = "text.transformer.resblocks.1"
    with torch.no_grad(), HiddenStateTap(model, [last]) as tap:
        pooled, tokens = model.text(text)
    h = tap.outputs[last]  # [B, L+1, D]
    expected = model.text.ln_final(h[:, -1]) @ model.text.text_projection
    assert torch.allclose(pooled, expected, atol=1e-5)
    assert torch.allclose(tokens, h[:, :-1], atol=1e-6)


def test_layer_width_and_unknown_layer(model: torch.nn.Module) -> None:
    assert layer_width(model, "visual.transformer.resblocks.0") == 96
    assert layer_width(model, "text_decoder.cross_attn.1") == 64
    with pytest.raises(DistillctlError, match="no layer"):
        layer_width(model, "visual.transformer.resblocks.9")


def test_check_compatible_refuses_other_grid_vocab_context(model: torch.nn.Module) -> None:
    splitter = CocaSplitter()
    same = build_coca(tiny_config(vision_layers=1, text_layers=1, decoder_layers=1, vision_width=48, vocab_size=VOCAB), "meta")
    splitter.check_compatible(model, same)  # depth and vision width may differ

    other_patch = build_coca(tiny_config(patch_size=8, vocab_size=VOCAB), "meta")
    with pytest.raises(DistillctlError) as exc:
        splitter.check_compatible(model, other_patch)
    msg = str(exc.value)
    assert "only same-grid students are supported" in msg
    assert "8x8" in msg and "4x4" in msg and "patch_size=16" in msg and "image_size=64" in msg
    assert "\n" not in msg

    with pytest.raises(DistillctlError, match="vocab size 128 differs"):
        splitter.check_compatible(model, build_coca(tiny_config(vocab_size=128), "meta"))
    with pytest.raises(DistillctlError, match="context length 16 differs"):
        splitter.check_compatible(model, build_coca(tiny_config(context_length=16, vocab_size=VOCAB), "meta"))
    with pytest.raises(DistillctlError, match="only understands open_clip CoCa"):
        splitter.modules(torch.nn.Linear(2, 2))
    with pytest.raises(DistillctlError, match="unknown CoCa module"):
        splitter.position_mask("audio", torch.zeros(1, 4, dtype=torch.long))
