"""The bundled ``quickstart`` teacher: a tiny open_clip CoCa trained by this project on ``shapes``.

It is a real ``open_clip.CoCa`` (vision 6x128 patch 8 at 64 px, text 4 and decoder 4+4 layers at
width 128, 3.72M parameters) with a 32-entry word vocabulary of its own. The weights ship as fp16
safetensors inside the package (``teacher.safetensors``); ``distillctl.quickstart.train`` is the
script that made them (its docstring has the command, seed and expected numbers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillctl.data.simple import SPECIALS, ImageTransform, WordTokenizer  # noqa: F401 - re-exported (0.1 names)
from distillctl.errors import WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from distillctl.interfaces import Teacher

WEIGHTS_FILE = Path(__file__).with_name("teacher.safetensors")

CONTEXT_LENGTH = 18  # <sot> + at most 16 words + <eot>
VOCAB_SIZE = 32


def model_config() -> dict[str, Any]:
    """The open_clip model config of the quickstart teacher."""
    return {
        "embed_dim": 128,
        "vision_cfg": {
            "image_size": 64,
            "patch_size": 8,
            "layers": 6,
            "width": 128,
            "head_width": 32,
            "attentional_pool": True,
            "attn_pooler_queries": 32,
            "attn_pooler_heads": 4,
            "output_tokens": True,
        },
        "text_cfg": {
            "context_length": CONTEXT_LENGTH,
            "vocab_size": VOCAB_SIZE,
            "width": 128,
            "heads": 4,
            "layers": 4,
            "embed_cls": True,
            "output_tokens": True,
        },
        "multimodal_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": VOCAB_SIZE, "width": 128, "heads": 4, "layers": 4},
        "custom_text": True,  # open_clip's factory builds a CoCa from open_clip_config.json only with this key
    }


# (x - 0.5) / 0.25 per channel; the transform below and open_clip_config.json agree on it
PREPROCESS_CONFIG: dict[str, Any] = {
    "size": 64,
    "mode": "RGB",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}


def tokenizer() -> WordTokenizer:
    from distillctl.data.shapes import VOCAB_WORDS

    return WordTokenizer(VOCAB_WORDS, CONTEXT_LENGTH, VOCAB_SIZE)


def transform() -> ImageTransform:
    return ImageTransform(PREPROCESS_CONFIG["size"], PREPROCESS_CONFIG["mean"], PREPROCESS_CONFIG["std"])


def build_model(cfg: dict[str, Any] | None = None, *, init: bool = True, device: str = "cpu") -> torch.nn.Module:
    """A fresh open_clip CoCa from the config, decoder vocab projection initialised."""
    from distillctl.coca.models import build_coca

    return build_coca(cfg or model_config(), device, init_decoder=init)


def _weights_path(weights: str | None) -> Path:
    """The file behind a ``--teacher-weights`` value: bundled, a file (.safetensors / .pt), a folder
    holding one, or ``local-dir:DIR`` (open_clip's folder form, as written by ``distill``)."""
    from distillctl.openclip.weights import local_dir

    if weights in (None, "", "bundled"):
        if not WEIGHTS_FILE.is_file():
            raise WeightsError(
                f"the bundled quickstart weights are missing ({WEIGHTS_FILE}); reinstall distillctl or train them with "
                "'python -m distillctl.quickstart.train'."
            )
        return WEIGHTS_FILE
    assert weights is not None
    if weights.startswith("local-dir:"):
        return Path(local_dir(Path(weights[len("local-dir:"):]).expanduser(), weights).path or "")
    path = Path(weights).expanduser()
    if path.is_dir():
        return Path(local_dir(path, weights).path or "")
    if not path.is_file():
        raise WeightsError(f"teacher weights file not found: {path} (check --teacher-weights).")
    return path


def load_quickstart_teacher(weights: str | None = None, device: str = "cpu") -> Teacher:
    """Bundled tiny CoCa trained on shapes (3.7M params, offline)."""
    from distillctl.interfaces import Teacher
    from distillctl.openclip.weights import file_sha256, load_weights_into

    model = build_model(init=weights == "random", device="meta" if device == "meta" else "cpu")
    if device == "meta":  # architecture only (``distillctl inspect``): no weights read
        what, digest = "(not loaded: meta)", ""
    elif weights == "random":
        what, digest = "random", "random"
    else:
        path = _weights_path(weights)
        what = "bundled" if path == WEIGHTS_FILE else str(weights)
        load_weights_into(model, path, what=what)  # .safetensors or torch.load(weights_only=True); one-line mismatch
        digest = file_sha256(path)
    if device != "meta":
        model = model.to(device)
    model = model.eval().requires_grad_(False)
    tok = tokenizer()
    return Teacher(
        name="quickstart",
        model=model,
        tokenizer=tok,
        transform=transform(),
        model_config=model_config(),
        preprocess_config=dict(PREPROCESS_CONFIG),
        weights=what,
        weights_hash=digest,
        family="coca",
        splitter="coca",
        tokenizer_config=tok.config(),
    )
