"""The built-in trackers: thin adapters over TensorBoard, Weights & Biases and MLflow.

Each constructor imports its library (so a missing package fails at start-up, in one line with the
install command) and writes nothing; ``start`` opens the run. The libraries' own formats are the
output: TensorBoard event files (``SummaryWriter``), a W&B run (``wandb.init``; ``WANDB_MODE=offline``
writes ``OUT/wandb/offline-run-*``, ``wandb sync`` uploads it later), an MLflow run (``MlflowClient``;
by default a file store in ``OUT/mlruns``).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from distillctl.trackers import TrackerError, flatten, install_hint


def _require(module: str, tracker: str, package: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TrackerError(f"tracker {tracker!r} needs the {package} package ({exc}); install it: "
                           f"{install_hint(package, extra)}, or drop {tracker} from --report-to.") from None


def _under(path: Path, out_dir: Path) -> bool:
    try:
        path.resolve().relative_to(out_dir.resolve())
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------- TensorBoard
class TensorBoardTracker:
    """TensorBoard event files (``torch.utils.tensorboard.SummaryWriter``), by default in ``OUT/tensorboard``."""

    name = "tensorboard"

    def __init__(self, log_dir: str | None = None, flush_secs: int = 30) -> None:
        _require("tensorboard", self.name, "tensorboard", "tensorboard")
        self._writer_cls = _require("torch.utils.tensorboard", self.name, "tensorboard", "tensorboard").SummaryWriter
        self.log_dir, self.flush_secs = log_dir, flush_secs
        self.writer: Any = None
        self.location: str | None = None
        self._out: Path | None = None

    def start(self, *, out_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        from distillctl.config import dumps_toml

        path = Path(self.log_dir).expanduser() if self.log_dir else out_dir / "tensorboard"
        self._out, self.location = out_dir, str(path)
        self.writer = self._writer_cls(log_dir=str(path), flush_secs=self.flush_secs)
        # the config twice: as hyperparameters (TensorBoard's HParams tab) and as the TOML that repeats the run
        flat = {k: v for k, v in flatten(config).items() if isinstance(v, (int, float, str, bool))}
        for summary in hparams(flat, {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "```toml\n" + dumps_toml(config) + "\n```", 0)

    def local_dirs(self) -> list[Path]:
        path = Path(self.location or "")
        return [path] if self._out is not None and _under(path, self._out) else []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def finish(self, *, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.add_text("status", "failed" if failed else "finished")
            self.writer.close()  # flushes the event file
            self.writer = None


# ----------------------------------------------------------------------------------------- W&B
class WandbTracker:
    """A Weights & Biases run (``wandb.init``); ``WANDB_MODE=offline`` (or ``mode = "offline"``) logs to
    ``OUT/wandb`` without an account, ``wandb sync OUT/wandb/offline-run-*`` uploads it later."""

    name = "wandb"

    def __init__(self, project: str = "distillctl", entity: str | None = None, name: str | None = None,
                 dir: str | None = None, mode: str | None = None, tags: list[str] | None = None,  # noqa: A002 - wandb's name
                 group: str | None = None) -> None:
        self.wandb = _require("wandb", self.name, "wandb", "wandb")
        if mode is not None and mode not in ("online", "offline", "disabled"):
            raise TrackerError(f"train.report_options.wandb.mode: expected online, offline or disabled, got {mode!r}.")
        self.project, self.entity, self.run_name, self.dir = project, entity, name, dir
        self.mode, self.tags, self.group = mode, tags, group
        self.run: Any = None
        self.location: str | None = None
        self._out: Path | None = None

    def start(self, *, out_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        root = Path(self.dir).expanduser() if self.dir else out_dir
        root.mkdir(parents=True, exist_ok=True)
        self._out = out_dir
        # WANDB_MODE as it is now: wandb caches the settings of its first run in the process, so a second run
        # (compare, tests) would otherwise inherit the first one's mode
        env_mode = os.environ.get("WANDB_MODE")
        mode = self.mode or (env_mode if env_mode in ("online", "offline", "disabled") else None)
        try:
            self.run = self.wandb.init(
                project=self.project, entity=self.entity, name=self.run_name or run_name, dir=str(root), config=config,
                mode=mode, tags=self.tags, group=self.group,
                # no stdout capture (the progress display owns the terminal), no code/git snapshot
                settings=self.wandb.Settings(console="off", save_code=False, silent=True),
            )
        except Exception as exc:  # noqa: BLE001 - no login, unreachable server: one line with the fixes
            text = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise TrackerError(f"{text} (log in with `wandb login`, or set WANDB_MODE=offline to log locally and "
                               "`wandb sync` later)") from None
        offline = getattr(self.run.settings, "mode", None) == "offline" or getattr(self.run, "offline", False)
        self._root = root
        self.location = f"offline, {Path(self.run.dir).parent}" if offline else (self.run.url or "online")

    def local_dirs(self) -> list[Path]:
        path = Path(getattr(self, "_root", ".")) / "wandb"
        return [path] if self._out is not None and _under(path, self._out) else []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_summary(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def log_artifact(self, path: Path) -> None:
        artifact = self.wandb.Artifact(Path(path).name.replace(".", "-"), type="distillctl-report")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, *, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


# ----------------------------------------------------------------------------------------- MLflow
_MLFLOW_BAD = re.compile(r"[^\w\-. /:]")  # MLflow's allowed key characters (`@` is not one of them)


class MlflowTracker:
    """An MLflow run (``MlflowClient``): ``tracking_uri`` (default ``MLFLOW_TRACKING_URI``, else a file store in
    ``OUT/mlruns``), experiment ``distillctl``; config as params, metrics per step, reports as artifacts."""

    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str = "distillctl", run_name: str | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self.mlflow = _require("mlflow", self.name, "mlflow-skinny", "mlflow")
        self.tracking_uri, self.experiment, self.run_name, self.tags = tracking_uri, experiment, run_name, tags
        self.client: Any = None
        self.run_id: str | None = None
        self.location: str | None = None
        self._local: Path | None = None

    def start(self, *, out_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            self._local = (out_dir / "mlruns").resolve()
            uri = self._local.as_uri()
        elif "://" not in uri and not uri.startswith(("databricks", "file:")):  # a plain folder: a file store
            self._local = Path(uri).expanduser().resolve()
            uri = self._local.as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode and refuses it unless asked: a local folder beside
            # the run is what we want (point tracking_uri at sqlite:///... or a server to use those instead)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.experiment)
        run = self.client.create_run(exp_id, run_name=self.run_name or run_name, tags=dict(self.tags or {}))
        self.run_id = run.info.run_id
        params = [Param(_MLFLOW_BAD.sub("_", k)[:250], str(v)[:6000]) for k, v in flatten(config).items() if v is not None]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self._out = out_dir
        self.location = f"{uri}, experiment {self.experiment!r}, run {self.run_id}"

    def local_dirs(self) -> list[Path]:
        return [self._local] if self._local is not None and _under(self._local, self._out or Path("/nonexistent")) else []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(_MLFLOW_BAD.sub("_", k), v, ts, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, *, failed: bool = False) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
            self.run_id = None
