"""Built-in trackers (registered through the same hook as any third-party plugin): ``--report-to tensorboard,wandb,mlflow``.

Contract (:mod:`distillctl.trackers`, ``plugins/README.md`` section 3.8): ``factory(**options) -> tracker``,
called at start-up before any model is built (import the library here: a missing package is one line
with the install command); options come from ``train.report_options.<tracker>``. The adapters live in
:mod:`distillctl.trackers.builtin`; nothing here imports a tracking library until its tracker is asked for.
"""

from __future__ import annotations

from typing import Any

from distillctl.hookspecs import Register, hookimpl


def make_tensorboard(*, log_dir: str | None = None, flush_secs: int = 30) -> Any:
    """TensorBoard event files (default OUT/tensorboard); pip install 'distillctl[tensorboard]'."""
    from distillctl.trackers.builtin import TensorBoardTracker

    return TensorBoardTracker(log_dir=log_dir, flush_secs=flush_secs)


def make_wandb(*, project: str = "distillctl", entity: str | None = None, name: str | None = None, dir: str | None = None,  # noqa: A002
               mode: str | None = None, tags: list | None = None, group: str | None = None) -> Any:
    """Weights & Biases run (WANDB_MODE=offline logs to OUT/wandb); pip install 'distillctl[wandb]'."""
    from distillctl.trackers.builtin import WandbTracker

    return WandbTracker(project=project, entity=entity, name=name, dir=dir, mode=mode, tags=tags, group=group)


def make_mlflow(*, tracking_uri: str | None = None, experiment: str = "distillctl", run_name: str | None = None,
                tags: dict | None = None) -> Any:
    """MLflow run (default: a file store in OUT/mlruns); pip install 'distillctl[mlflow]'."""
    from distillctl.trackers.builtin import MlflowTracker

    return MlflowTracker(tracking_uri=tracking_uri, experiment=experiment, run_name=run_name, tags=tags)


@hookimpl
def register_trackers(register: Register) -> None:
    register("tensorboard", make_tensorboard, aliases=("tb",))
    register("wandb", make_wandb)
    register("mlflow", make_mlflow)
