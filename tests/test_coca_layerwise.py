"""Layerwise parts: taps, masked MSE (pads carry nothing), projections, layer pairs, teacher invariants."""

from __future__ import annotations

import pytest
import torch

from distillctl.coca.models import random_teacher, tiny_config
from distillctl.coca.splitter import CocaSplitter, layer_width
from distillctl.errors import DistillctlError
from distillctl.interfaces import Module, Stack
from distillctl.layerwise import (
    HiddenStateTap,
    build_projections,
    layer_pairs,
    masked_mse,
    projection_key,
    uniform_layer_map,
)
from distillctl.plugins import registry

VOCAB = 64


class TinyTokenizer:
    """Ids 3..63 for words, sot 1, eot 2, pad 0 (enough for hidden-state tests)."""

    context_length, vocab_size, sot_token_id, eot_token_id = 32, VOCAB, 1, 2

    def __call__(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for b, t in enumerate(texts):
            ids = [1, *[3 + (sum(map(ord, w)) % (VOCAB - 3)) for w in t.split()][: self.context_length - 2], 2]
            out[b, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids):
        return " ".join(str(i) for i in ids if i > 2)


def test_masked_mse_value_and_normalisation() -> None:
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # [1, 3, 2]
    t = torch.tensor([[[0.0, 2.0], [3.0, 2.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # valid diffs^2: 1, 0, 0, 4 -> mean 1.25; teacher mean square at valid positions: (0+4+9+4)/4 = 4.25
    assert masked_mse(s, t, mask, normalize=False).item() == pytest.approx(1.25)
    assert masked_mse(s, t, mask, normalize=True).item() == pytest.approx(1.25 / 4.25)
    full = ((s - t) ** 2).mean()
    assert masked_mse(s, t, None, normalize=False).item() == pytest.approx(full.item())


def test_pad_positions_carry_no_loss_and_no_gradient() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, 5, 8, requires_grad=True)
    t = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    for normalize in (False, True):
        base = masked_mse(s, t, mask, normalize)
        s2, t2 = s.detach().clone(), t.clone()
        s2[~mask] = 1e6  # garbage in pad positions of both student and teacher
        t2[~mask] = float("nan")
        assert masked_mse(s2, t2, mask, normalize).item() == base.item()
        (grad,) = torch.autograd.grad(base, s)
        assert torch.all(grad[~mask] == 0)
        assert torch.all(grad[mask].abs().sum(-1) > 0)
    empty = masked_mse(s, t, torch.zeros(2, 5, dtype=torch.bool), True)
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(DistillctlError, match="does not match"):
        masked_mse(s, t, torch.ones(2, 4, dtype=torch.bool), False)
    with pytest.raises(DistillctlError, match="shapes differ"):
        masked_mse(s, t[..., :4], None, False)


def test_projections_only_where_widths_differ() -> None:
    proj = build_projections({"visual.transformer.resblocks.0": (48, 96), "text.transformer.resblocks.0": (64, 64)})
    assert list(proj.keys()) == ["visual__transformer__resblocks__0"]
    lin = proj[projection_key("visual.transformer.resblocks.0")]
    assert isinstance(lin, torch.nn.Linear) and tuple(lin.weight.shape) == (96, 48)
    assert lin(torch.randn(2, 3, 48)).shape == (2, 3, 96)


def test_uniform_map_and_layer_pairs() -> None:
    assert uniform_layer_map(4, 2) == [1, 3]
    assert uniform_layer_map(24, 12) == list(range(1, 24, 2))
    assert uniform_layer_map(6, 3) == [1, 3, 5] and uniform_layer_map(5, 5) == [0, 1, 2, 3, 4]
    with pytest.raises(DistillctlError, match="cannot be mapped"):
        uniform_layer_map(2, 3)
    t = [Module("multimodal", (Stack("d.self", 4), Stack("d.cross", 4))), Module("vision", (Stack("v", 6),))]
    s = [Module("multimodal", (Stack("d.self", 2), Stack("d.cross", 2))), Module("vision", (Stack("v", 2),))]
    pairs = layer_pairs(t, s, {"vision": {"v": [0, 5]}})
    assert pairs["multimodal"] == [("d.self.0", "d.self.1"), ("d.self.1", "d.self.3"), ("d.cross.0", "d.cross.1"), ("d.cross.1", "d.cross.3")]
    assert pairs["vision"] == [("v.0", "v.0"), ("v.1", "v.5")]
    with pytest.raises(DistillctlError, match="out of range"):
        layer_pairs(t, s, {"vision": {"v": [0, 6]}})
    with pytest.raises(DistillctlError, match="2 student layers"):
        layer_pairs(t, s, {"vision": {"v": [0]}})


def test_tap_only_requested_layers_and_removable() -> None:
    teacher = random_teacher(tiny_config(vision_layers=2, text_layers=1, decoder_layers=1, vocab_size=VOCAB), seed=0,
                             tokenizer=TinyTokenizer())
    model = teacher.model
    image, text = torch.randn(1, 3, 64, 64), teacher.tokenizer(["a b c"])
    tap = HiddenStateTap(model, ["visual.transformer.resblocks.1"])
    with torch.no_grad():
        model(image, text)
    assert list(tap.outputs) == ["visual.transformer.resblocks.1"]
    tap.remove()
    tap.clear()
    with torch.no_grad():
        model(image, text)
    assert tap.outputs == {}
    with pytest.raises(DistillctlError, match="no such layer"):
        HiddenStateTap(model, ["visual.nope"])


def test_student_step_leaves_teacher_bit_identical_and_in_eval() -> None:
    """Tap + masked MSE (+ projections for a narrower student) + AdamW: only the student moves."""
    teacher = random_teacher(tiny_config(vocab_size=VOCAB), seed=0, tokenizer=TinyTokenizer())
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    splitter = CocaSplitter()
    students = registry("student")
    for student in (
        students.create("layer-subset", teacher=teacher, splitter=splitter, ratio=0.5),
        students.create("config", teacher=teacher, splitter=splitter,
                        config={"vision_cfg": {"layers": 2, "width": 48, "head_width": 24}}),
    ):
        splitter.check_compatible(teacher.model, student.model)
        pairs = layer_pairs(splitter.modules(teacher.model), splitter.modules(student.model), student.layer_map)
        flat = [(m, sp, tp) for m, ps in pairs.items() for sp, tp in ps]
        proj = build_projections({sp: (layer_width(student.model, sp), layer_width(teacher.model, tp)) for _, sp, tp in flat})
        opt = torch.optim.AdamW([*student.model.parameters(), *proj.parameters()], lr=1e-3)
        s_before = {k: v.clone() for k, v in student.model.state_dict().items()}
        image = torch.randn(2, 3, 64, 64)
        text = teacher.tokenizer(["a red square", "two blue circles left of a star"])
        with HiddenStateTap(teacher.model, [tp for *_, tp in flat]) as t_tap, HiddenStateTap(
            student.model, [sp for _, sp, _ in flat]
        ) as s_tap:
            with torch.no_grad():
                teacher.model(image, text)
            student.model(image, text)
            loss = torch.zeros(())
            for module, sp, tp in flat:
                h = s_tap.outputs[sp]
                key = projection_key(sp)
                h = proj[key](h) if key in proj else h
                loss = loss + masked_mse(h, t_tap.outputs[tp], splitter.position_mask(module, text), normalize=True)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss) and loss.item() > 0
        assert not teacher.model.training
        for k, v in teacher.model.state_dict().items():
            assert torch.equal(v, before[k]), k
        moved = [k for k, v in student.model.state_dict().items() if not torch.equal(v, s_before[k])]
        assert any(k.startswith("visual.transformer.resblocks") for k in moved)
