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
    """A loaded model bundle: model + tokenizer + image transform + what export needs.

    Used for teachers and for exported students rebuilt by :meth:`Family.load` (``distillctl eval``).
    ``family`` and ``splitter`` are required keyword arguments (the registered names that understand the model).
    """

    name: str
    model: torch.nn.Module  # eval mode, requires_grad False
    tokenizer: Tokenizer | None  # None for families without text (image classifiers)
    transform: Callable[[Image.Image], torch.Tensor]  # eval transform, PIL -> [3, H, W]
    model_config: dict[str, Any]  # the family's model config (open_clip cfg for coca / clip)
    preprocess_config: dict[str, Any]  # preprocess cfg (size, mean, std, interpolation, ...)
    weights: str  # what was loaded: path, tag, "bundled", "random"
    weights_hash: str  # sha256 of the weights file (or of the state dict for random)
    # required, by keyword: the registered family (forward, losses, export) and splitter that understand this
    # model; `[family] name = "auto"` / `[splitter] name = "auto"` resolve to them. No default: a bundle that
    # forgot them would silently be run as a CoCa (0.1 defaulted both to "coca").
    family: str = field(kw_only=True)
    splitter: str = field(kw_only=True)
    tokenizer_config: dict[str, Any] = field(default_factory=dict)  # how to rebuild the tokenizer
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific facts (e.g. class names)

    def __post_init__(self) -> None:
        for key in ("family", "splitter"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise TypeError(f"Teacher {self.name!r}: {key} must be the name of a registered {key} "
                                f"(e.g. {key}=\"coca\"), got {value!r}")


ModelBundle = Teacher  # the same record describes any loaded model


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
    """One indexed run of layers inside a module, e.g. ``text_decoder.cross_attn``.

    Layer ``i`` of the stack is the submodule ``f"{name}.{start + i}"``: ``start`` lets several modules
    share one ``nn.ModuleList`` (a ViT's ``blocks`` split into early / middle / late groups).
    """

    name: str  # path of the nn.ModuleList, e.g. "text_decoder.cross_attn"
    depth: int
    start: int = 0  # index of this stack's first layer inside the ModuleList

    def layer(self, i: int) -> str:
        return f"{self.name}.{self.start + i}"


@dataclass(frozen=True)
class Module:
    """A module of a model: a name and its ordered stacks (most modules have one stack)."""

    name: str  # "vision" | "text" | "multimodal" | ...
    stacks: tuple[Stack, ...]

    @property
    def depth(self) -> int:
        return sum(s.depth for s in self.stacks)


class Splitter(Protocol):
    """Names the modules of a model and lists their layers.

    The layer contract: every layer path (``Stack.layer(i)``) names a submodule of the model whose
    forward output -- or its first element when it returns a tuple -- is the hidden state
    ``[B, L, D]`` (tokens) or ``[B, D, H, W]`` (convolutional stages; the engine flattens it to
    ``[B, H*W, D]``). Teacher and student layers that are paired must produce the same ``L`` (or the
    same ``H, W``); widths ``D`` may differ (a learned projection bridges them).
    """

    def modules(self, model: torch.nn.Module) -> list[Module]: ...

    def check_compatible(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        """Raise DistillctlError *before training* if hidden states cannot be paired
        (e.g. different vision token grids)."""
        ...


# --------------------------------------------------------------------------- families
Inputs = dict[str, Any]  # what a family's forward takes, e.g. {"image": [B,3,H,W], "text": [B,L]}
Outputs = dict[str, Any]  # what a family's forward returns (tensors, by the family's own keys)


@dataclass(frozen=True)
class StepPlan:
    """What a **module-local** training step of one arm runs (``train.forward = "arm"``).

    Returned by a family's optional ``step_plan(modules)``; None (or no such method) means the arm
    needs the full forward. The engine runs ``forward`` on the teacher (under ``no_grad``) and on the
    student, with forward hooks on the arm's mapped layers only:

    * ``forward(model, inputs) -> outputs``: runs only the parts of ``model`` that feed the arm's
      hooked layers (e.g. CoCa's vision arm: ``model.visual(image)``). Any return value is accepted
      when ``terms`` is False.
    * ``terms``: True when the family's ``task_loss`` and ``kd_terms`` can be computed from what
      ``forward`` returned (the family must then accept those partial outputs). False: the step's
      loss is the arm's layerwise terms alone, and the engine **stops each forward early**, as soon
      as every hooked layer of that model has run (nothing after the deepest hooked layer is
      computed; timm's ``forward_intermediates(stop_early=True)`` is the model).
    * ``parts``: names of what runs, for reports and ``inspect`` (e.g. ``("visual",)``).
    """

    parts: tuple[str, ...]
    forward: Callable[[Any, Any], Any]
    terms: bool = False


class Family(Protocol):
    """Everything model-specific: one per model family (``coca``, ``clip``, a plugin's ``timm``...).

    The engine is generic: phases, policy, probe and reward, optimizer, layerwise terms over the
    splitter's layer pairs, checkpoints, reports. It calls the family for everything that depends
    on what the model *is*. Every method may raise :class:`distillctl.DistillctlError` for bad input.

    Required:

    * ``name`` -- the registered name.
    * ``inputs(batch, device)`` -- a loader :class:`distillctl.data.loader.Batch` (``images``
      ``[B,3,H,W]``, ``text`` token ids ``[B,L]`` or None, ``captions``, ``labels``) -> model inputs.
    * ``forward(model, inputs)`` -> outputs. Called for the teacher under ``torch.no_grad()``.
    * ``task_loss(outputs, inputs)`` -> ``{term: scalar}``; the task loss is their sum.
    * ``kd_terms(student_out, teacher_out, inputs, *, temperature)`` -> ``{term: scalar}``: the
      logit-level distillation terms of this family (width-independent); their sum is ``kd``.
      Return ``{}`` when the family has none.
    * ``position_mask(module, inputs)`` -> bool ``[B, L_module]`` of hidden-state positions that
      carry layerwise loss for ``module`` (pads excluded), or None when every position counts.
    * ``export(model, out_dir, *, model_config, source, metadata, dtype)`` -> sizes dict: write the
      student (``student.safetensors`` through :func:`distillctl.export.save_weights`, plus any side
      files such as ``open_clip_config.json``). ``source`` is the teacher bundle (tokenizer and
      preprocess facts to carry over).
    * ``load(path, device)`` -> :class:`Teacher` bundle rebuilt from an export (``path`` is the
      ``student.safetensors`` file; its metadata holds what ``export`` wrote).
    * ``build(model_config, device)`` -> a fresh (random-init) model of this family.

    Optional (what evaluators and generic students use; absent = not supported):

    * ``with_depths(model_config, depths: {module: n_layers}) -> model_config`` -- the config of a
      shallower model (the built-in ``layer-subset`` student uses it).
    * ``encode_image(model, images) -> [N, E]`` / ``encode_text(model, text) -> [N, E]`` --
      L2-normalised embeddings (retrieval, zero-shot).
    * ``caption_logits(model, inputs) -> (logits [B, L', V], labels [B, L'])`` -- teacher forcing.
    * ``caption_start(model, images) -> state`` and ``caption_step(model, state, prefix [B, t]) ->
      logits [B, V]`` -- incremental decoding for the built-in greedy / beam decoder.
    * ``class_logits(model, images) -> [N, C]`` -- image classifiers.
    * ``dummy_inputs(bundle, batch_size, device) -> inputs`` -- shapes only (``inspect``).
    * ``step_plan(modules: tuple[str, ...]) -> StepPlan | None`` -- what a module-local step of an
      arm runs (``train.forward = "arm"``); None = the full forward. Absent: every step is full.
    * ``evaluators: tuple[str, ...]`` -- built-in evaluators that apply to this family, first =
      the default when ``eval.evaluators`` is not set.
    """

    name: str
    evaluators: tuple[str, ...]

    def inputs(self, batch: Any, device: Any) -> Inputs: ...

    def forward(self, model: torch.nn.Module, inputs: Inputs) -> Outputs: ...

    def task_loss(self, outputs: Outputs, inputs: Inputs) -> dict[str, torch.Tensor]: ...

    def kd_terms(
        self, student_out: Outputs, teacher_out: Outputs, inputs: Inputs, *, temperature: float
    ) -> dict[str, torch.Tensor]: ...

    def position_mask(self, module: str, inputs: Inputs) -> torch.Tensor | None: ...

    def export(
        self,
        model: torch.nn.Module,
        out_dir: Any,
        *,
        model_config: dict[str, Any],
        source: Teacher,
        metadata: dict[str, str],
        dtype: str,
    ) -> dict[str, Any]: ...

    def load(self, path: Any, device: str) -> Teacher: ...

    def build(self, model_config: dict[str, Any], device: Any) -> torch.nn.Module: ...


# --------------------------------------------------------------------------- policies
Arm = tuple[str, ...]


class Policy(Protocol):
    """Picks the arm of each episode from the reward history. Pure Python, no torch."""

    arms: list[Arm]
    # optional: ``uses_rewards = False`` for a policy whose choices never depend on rewards (it then
    # plays its own arms in the engine's burn-in episodes too); default True

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
@dataclass
class EvalContext:
    """What an evaluator gets besides the model: the family's forwards, the data, the other model.

    ``teacher`` is set when the student is scored next to its teacher (``pair`` metrics such as
    fidelity need both); ``samples`` is the user's cap on evaluated items.
    """

    family: Any  # a Family
    dataset: Dataset
    device: str = "cpu"
    samples: int = 1000
    teacher: Teacher | None = None
    notes: list[str] = field(default_factory=list)  # one-line remarks shown under the table


class Evaluator(Protocol):
    """Scores a model. ``factory(**options) -> Evaluator``; options come from the ``[eval]`` section.

    ``evaluate(bundle, ctx)`` is called once per scored model (student, then teacher) and returns a
    flat ``{metric: value}`` dict. An evaluator that compares the two may also define
    ``evaluate_pair(student, teacher, ctx) -> {metric: value}`` (shown as the student's metrics).
    ``applies_to(family) -> bool`` (optional) says whether it can score this family's models (asked before
    it runs; absent, it applies to every family). Raise DistillctlError for bad input.
    """

    name: str

    def evaluate(self, bundle: Teacher, ctx: EvalContext) -> dict[str, float]: ...
