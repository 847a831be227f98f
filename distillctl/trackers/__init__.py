"""Experiment trackers (``--report-to tensorboard,wandb,mlflow``): a run watched live, the way open_clip,
the HF Trainer and Lightning let you watch theirs.

A tracker is a plugin component (kind ``tracker``, hook ``register_trackers``); the built-ins
(:mod:`distillctl.default_plugins.trackers`) are thin adapters over TensorBoard's ``SummaryWriter``,
``wandb`` and MLflow's ``MlflowClient``, each library imported only when its tracker is asked for.

The run's side is :class:`Trackers`, one object the engine calls at a few places:

=====================  ======================================================================================
``create_trackers``    ``preflight`` (rank 0 only): each factory imports its library and checks its options; a
                       tracker that cannot be had (package missing) is one line with the install command,
                       before any model is built. Nothing is written yet.
``session()``          around the run, inside the ``--out`` folder's session: ``start`` (the run's config as
                       hyperparameters; a tracker that cannot start -- no login, unreachable server -- is one
                       line, still before any model is built), and at the end ``finish(failed=...)``.
``log_step``           once per optimizer step, with the step's loss terms *as device tensors*: nothing is read
                       from the device here.
``log_episode``        once per episode: the buffered per-step values are moved to the host in ONE transfer and
                       logged with their own step numbers (so a tracker costs no extra synchronisation per
                       step), then the episode's arm, reward, probe loss and the policy's posterior.
``log_run_end``        once, after ``report.json``: the evaluation (``eval/student/*``, ``eval/teacher/*``),
                       sizes, and ``report.html`` / ``report.json`` as artifacts where the tracker takes files.
=====================  ======================================================================================

Once the run has started, a tracker that raises is reported in one warning line and dropped; the
run goes on (a tracker never loses a run).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillctl.errors import DistillctlError

__all__ = ["TrackerError", "Trackers", "create_trackers", "flatten", "install_hint"]

EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class TrackerError(DistillctlError):
    """A tracker asked for with ``--report-to`` cannot be used (package missing, no login, bad option)."""


def install_hint(package: str, extra: str) -> str:
    return f"pip install '{package}' (or pip install 'distillctl[{extra}]')"


def flatten(doc: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``; lists become strings (what trackers take as params)."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key, sep))
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(map(str, v))
        else:
            out[key] = v
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, DistillctlError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def create_trackers(cfg: dict[str, Any], *, emit: Any = None) -> Trackers:
    """The trackers ``train.report_to`` names (options from ``train.report_options``); nothing written yet.

    A factory that raises (its library is not installed, an option is wrong) is one :class:`TrackerError`
    line, raised here: ``preflight`` calls this before any model is built."""
    from distillctl.errors import PluginError
    from distillctl.plugins import registry
    from distillctl.registry import plugin_errors

    names = cfg["train"].get("report_to") or []
    names = [n.strip() for n in names.split(",") if n.strip()] if isinstance(names, str) else list(names)
    options = cfg["train"].get("report_options") or {}
    reg = registry("tracker")
    made = []
    for name in dict.fromkeys(names):  # each tracker once, in the order given
        entry = reg.get(name)
        opts = dict(options.get(entry.name) or options.get(name) or {})
        try:
            with plugin_errors(entry, "start-up", name=name):
                made.append(entry.factory(**opts))
        except PluginError as exc:
            missing = exc.__cause__
            if not isinstance(missing, ModuleNotFoundError) or not missing.name:
                raise
            package = missing.name.split(".")[0]
            raise TrackerError(f"{entry.describe(name)} needs the Python package {package!r}, which is not installed "
                               f"({missing}); install it (pip install {package}) or drop {name} from --report-to.") from None
    return Trackers(made, emit=emit)


class Trackers:
    """The run's trackers behind one object; with none, every method returns at once."""

    def __init__(self, trackers: list[Any] | None = None, *, emit: Any = None) -> None:
        self.trackers = list(trackers or [])
        self.emit = emit or (lambda kind, payload: None)
        self._steps: list[tuple[int, dict[str, Any], float]] = []  # (step, terms on device, lr) since the last episode
        self.log_dirs: list[Path] = []  # local folders the trackers write under --out

    def __bool__(self) -> bool:
        return bool(self.trackers)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    # ------------------------------------------------------------------ lifecycle
    @contextlib.contextmanager
    def session(self, *, out_dir: Path, run_name: str, config: dict[str, Any]) -> Iterator[Trackers]:
        """Start every tracker (config as hyperparameters); finish them when the run ends, failed or not."""
        started = []
        try:
            for t in self.trackers:
                try:
                    t.start(out_dir=Path(out_dir), run_name=run_name, config=config)
                except DistillctlError as exc:
                    raise TrackerError(f"tracker {t.name!r} could not start: {exc}") from None
                except Exception as exc:  # noqa: BLE001 - a library's own error: one line, the run has not begun
                    raise TrackerError(f"tracker {t.name!r} could not start: {_one_line(exc)}") from None
                started.append(t)
                self.log_dirs += [Path(p) for p in getattr(t, "local_dirs", lambda: [])()]
        except BaseException:
            self.trackers = started
            self._finish(failed=True)
            raise
        if self.trackers:
            self.emit("status", {"message": "tracking: " + ", ".join(_where(t) for t in self.trackers)})
        try:
            yield self
        except BaseException:
            self._finish(failed=True)
            raise
        self._finish(failed=False)

    def _finish(self, *, failed: bool) -> None:
        for t in list(self.trackers):
            self._call(t, "finish", failed=failed)
        self.trackers = []

    def _call(self, tracker: Any, method: str, *args: Any, **kwargs: Any) -> None:
        """Call a tracker; one that raises is reported once and dropped, the run goes on."""
        try:
            getattr(tracker, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a tracker must never lose a run
            if tracker in self.trackers:
                self.trackers.remove(tracker)
            message = f"tracker {tracker.name!r} failed in {method} and was stopped: {_one_line(exc)}; the run goes on."
            self.emit("warning", {"message": message})
            if method != "finish":
                with contextlib.suppress(Exception):
                    tracker.finish(failed=True)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        for t in list(self.trackers):
            self._call(t, "log_metrics", clean, step)

    # ------------------------------------------------------------------ what the engine logs
    def log_step(self, step: int, terms: dict[str, Any], lr: float) -> None:
        """Per-step loss terms, kept on device until the episode ends (no host sync here)."""
        if self.trackers:
            self._steps.append((step, {k: v.detach() for k, v in terms.items()}, float(lr)))

    def flush_steps(self) -> None:
        """The buffered steps' values, moved to the host in one transfer, logged at their own step numbers."""
        if not self._steps:
            return
        import torch

        keys = [(step, k) for step, terms, _ in self._steps for k in terms]
        values = torch.stack([v.float().reshape(()) for _, terms, _ in self._steps for v in terms.values()]).tolist()
        by_step: dict[int, dict[str, float]] = {step: {"train/lr": lr} for step, _, lr in self._steps}
        for (step, k), v in zip(keys, values, strict=True):
            by_step[step][f"train/{_key(k)}"] = v
        self._steps = []
        for step, metrics in by_step.items():
            self._log(metrics, step)

    def log_episode(self, record: dict[str, Any], arms: list[str]) -> None:
        """The episode's per-step values (one transfer), then its arm, reward, probe loss and posterior."""
        if not self.trackers:
            self._steps = []
            return
        self.flush_steps()
        metrics: dict[str, float] = {
            "episode/episode": record["episode"],
            "episode/arm_index": arms.index(record["arm"]) if record["arm"] in arms else -1,
            "episode/reward": record["reward"],
            "episode/probe_loss": record["probe_loss"],
            "episode/burn_in": float(bool(record.get("burn_in"))),
            "episode/lr": record.get("lr", float("nan")),
            **{f"episode/arm/{a}": float(a == record["arm"]) for a in arms},
            **{f"probe/{_key(k)}": v for k, v in (record.get("probe") or {}).items()},
        }
        if "samples_per_s" in record:
            metrics["episode/samples_per_s"] = record["samples_per_s"]
        for a, post in zip(arms, record.get("posterior") or [], strict=False):
            for k, v in post.items():
                metrics[f"posterior/{a}/{k}"] = v
        self._log(metrics, int(record["step"]))
        for t in list(self.trackers):
            if hasattr(t, "log_text"):
                self._call(t, "log_text", "episode/arm_name", f"episode {record['episode']}: {record['arm']}", int(record["step"]))

    def log_run_end(self, report: dict[str, Any], out_dir: Path) -> None:
        """The evaluation and sizes as metrics at the final step; ``report.html`` / ``report.json`` as artifacts."""
        if not self.trackers:
            return
        self.flush_steps()
        step = int(report.get("steps", 0))
        metrics: dict[str, float] = {}
        for side, values in (report.get("eval") or {}).items():
            metrics.update({f"eval/{side}/{k}": v for k, v in values.items()})
        sizes = report.get("sizes") or {}
        for k in ("teacher_params", "student_params", "compression", "student_file_bytes"):
            if isinstance(sizes.get(k), (int, float)):
                metrics[f"sizes/{k}"] = sizes[k]
        metrics.update({f"arms/{a['arm']}/pulls": a["pulls"] for a in report.get("arms") or []})
        self._log(metrics, step)
        for t in list(self.trackers):
            if hasattr(t, "log_summary"):
                self._call(t, "log_summary", metrics)
            if hasattr(t, "log_artifact"):
                for name in ("report.html", "report.json"):
                    if (Path(out_dir) / name).is_file():
                        self._call(t, "log_artifact", Path(out_dir) / name)


def _key(term: str) -> str:
    """A loss term's name as one path component (``task/contrastive`` -> ``task.contrastive``): ``train/task`` and
    its parts must not nest, since MLflow's file store keeps ``train/task`` as a file."""
    return term.replace("/", ".")


def _where(tracker: Any) -> str:
    where = getattr(tracker, "location", None)
    return f"{tracker.name} ({where})" if where else tracker.name
