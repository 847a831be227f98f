"""Component interfaces (Protocols and small data classes), in one place.

Nothing here imports torch at import time: ``distillctl --help`` and ``distillctl plugins`` must
stay fast. Tensor types appear only under ``TYPE_CHECKING``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image


# --------------------------------------------------------------------------- data
@dataclass
class Sample:
    """One item of a data source: an image, its caption(s) and an optional label."""

    image: Image.Image
    caption: str
    label: str | None = None
    captions: list[str] = field(default_factory=list)  # all captions (COCO); [caption] if empty


@runtime_checkable
class Dataset(Protocol):
    """A sized, indexable source of :class:`Sample`.

    ``__getitem__`` raises :class:`distillctl.data.SkipItem` (with a reason) for an item that
    cannot be used (unreadable image, empty caption); loaders skip and count it.
    """

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def describe(self) -> str:
        """One line for logs and errors, e.g. ``csv /data/train.csv (1,204 rows)``."""
        ...


# --------------------------------------------------------------------------- models
class Tokenizer(Protocol):
    """Callable turning captions into a ``[B, context_length]`` long tensor (pad id 0)."""

    context_length: int
    vocab_size: int
    sot_token_id: int
    eot_token_id: int

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass
class Teacher:
    """A loaded teacher: model + tokenizer + image transform + what export needs."""

    name: str
    model: torch.nn.Module  # eval mode, requires_grad False
    tokenizer: Tokenizer
    transform: Callable[[Image.Image], torch.Tensor]  # eval transform, PIL -> [3, H, W]
    model_config: dict[str, Any]  # open_clip model cfg (embed_dim, vision_cfg, text_cfg, multimodal_cfg)
    preprocess_config: dict[str, Any]  # open_clip preprocess cfg (size, mean, std, interpolation, ...)
    weights: str  # what was loaded: path, tag, "bundled", "random"
    weights_hash: str  # sha256 of the weights file (or of the state dict for random)
    splitter: str = "coca"  # the splitter that understands this model
    tokenizer_config: dict[str, Any] = field(default_factory=dict)  # how to rebuild the tokenizer


@dataclass
class Student:
    """A built student model and how its layers map onto the teacher's."""

    model: torch.nn.Module
    model_config: dict[str, Any]
    # module name -> stack name -> list of teacher layer indices, one per student layer
    layer_map: dict[str, dict[str, list[int]]]
    description: str = ""


@dataclass(frozen=True)
class Stack:
    """One indexed list of layers inside a module, e.g. ``text_decoder.cross_attn``."""

    name: str  # stack path prefix, e.g. "text_decoder.cross_attn"
    depth: int

    def layer(self, i: int) -> str:
        return f"{self.name}.{i}"


@dataclass(frozen=True)
class Module:
    """A module of a model: a name and its ordered stacks (most modules have one stack)."""

    name: str  # "vision" | "text" | "multimodal" | ...
    stacks: tuple[Stack, ...]

    @property
    def depth(self) -> int:
        return sum(s.depth for s in self.stacks)


class Splitter(Protocol):
    """Names the modules of a model and tells which hidden-state positions carry loss."""

    def modules(self, model: torch.nn.Module) -> list[Module]: ...

    def position_mask(self, module: str, text: torch.Tensor) -> torch.Tensor | None:
        """Bool mask ``[B, L_module]`` of positions that carry loss for this module's hidden
        states (pad positions excluded), given the batch's token ids ``text`` [B, L];
        None = every position counts (e.g. vision tokens)."""
        ...

    def check_compatible(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        """Raise DistillctlError *before training* if hidden states cannot be paired
        (e.g. different vision token grids)."""
        ...


# --------------------------------------------------------------------------- policies
Arm = tuple[str, ...]


class Policy(Protocol):
    """Picks the arm of each episode from the reward history. Pure Python, no torch."""

    arms: list[Arm]

    def select(self, episode: int) -> int:
        """Index into ``arms`` for this episode."""
        ...

    def update(self, arm: int, reward: float) -> None: ...

    def posterior(self) -> list[dict[str, float]]:
        """Per-arm summary for reports (e.g. mean, std, n in window); may be empty dicts."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly (history, RNG state). JSON-serialisable."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# --------------------------------------------------------------------------- evaluation
class Evaluator(Protocol):
    """Scores a model on a dataset. Returns a flat ``{metric: value}`` dict."""

    name: str

    def evaluate(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        transform: Callable[[Image.Image], torch.Tensor],
        dataset: Dataset,
        *,
        device: str = "cpu",
    ) -> dict[str, float]: ...
