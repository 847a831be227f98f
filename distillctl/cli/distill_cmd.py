"""``distillctl distill``: run module-wise adaptive layerwise distillation.

Config precedence: preset (bundled name or a TOML path; ``quickstart`` when none is given) <
command-line flags < ``--set section.key=value``. The resolved config is validated before anything
is built and written to ``OUT/run.toml``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from distillctl.cli._common import console

DEFAULT_PRESET = "quickstart"


def build_config(
    preset: str | None,
    flags: dict[str, Any],
    overrides: list[str],
) -> tuple[dict[str, Any], str]:
    """Preset < flags < --set; returns (validated config, preset name used)."""
    from distillctl.config import COMPONENT_FIELDS, apply_overrides, merge, validate
    from distillctl.presets import load_preset

    name = preset or DEFAULT_PRESET
    base = load_preset(name)
    for section, table in flags.items():
        # a flag that names another component drops the preset's options for the old one
        # (`--student config` on a preset with `student.ratio` must not inherit `ratio`)
        new_name = table.get("name")
        if new_name is not None and isinstance(base.get(section), dict) and base[section].get("name") != new_name:
            generic = set(COMPONENT_FIELDS[section]) - {"name", "weights"}  # e.g. policy.arms, data.workers
            base = {**base, section: {k: v for k, v in base[section].items() if k in generic}}
    cfg = merge(base, {s: {k: v for k, v in t.items() if v is not None} for s, t in flags.items()})
    cfg = apply_overrides(cfg, overrides)
    return validate(cfg, source=f"preset {name}"), name


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Distillation")
    def distill(
        preset: Annotated[str | None, typer.Option("--preset", "-p", help="Bundled preset name or path to a TOML file (default: quickstart).")] = None,
        teacher: Annotated[str | None, typer.Option(help="Teacher name (see `distillctl plugins`).")] = None,
        teacher_weights: Annotated[str | None, typer.Option(help="Weights: file, local-dir:DIR, pretrained tag or 'random'.")] = None,
        student: Annotated[str | None, typer.Option(help="Student builder, e.g. layer-subset or config.")] = None,
        policy: Annotated[str | None, typer.Option(help="Selection policy: optima, uniform, fixed-order, ...")] = None,
        arms: Annotated[str | None, typer.Option(help="Arm set: single | combinations | all.")] = None,
        data: Annotated[str | None, typer.Option(help="Data source: shapes, csv, coco, folder, ...")] = None,
        episodes: Annotated[int | None, typer.Option(help="Number of episodes.")] = None,
        steps: Annotated[int | None, typer.Option(help="Total optimizer steps (sets episodes = ceil(steps / episode-steps)); with train.budget = flops (the quickstart preset), the compute of that many full all-module steps.")] = None,
        episode_steps: Annotated[int | None, typer.Option(help="Optimizer steps per episode (T).")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
        lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW).")] = None,
        device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
        precision: Annotated[str | None, typer.Option(help="fp32 | bf16 (autocast).")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed for data order, init and policy.")] = None,
        export_dtype: Annotated[str | None, typer.Option(help="Dtype of student.safetensors: fp32 | bf16 | fp16.")] = None,
        report_to: Annotated[str | None, typer.Option("--report-to", help="Log the run live to trackers: comma-separated "
                                                      "tensorboard, wandb, mlflow (train.report_to).")] = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: runs/<preset>-<time>).")] = None,
        overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
        resume: Annotated[bool, typer.Option(help="Continue the unfinished run in --out from its last checkpoint.")] = False,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override any config value: section.key=value (repeatable).")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or tables (CI).")] = False,
        nproc: Annotated[int | None, typer.Option("--nproc", help="Run N processes on this machine (torch.distributed.run; DDP, "
                                                  "one per GPU on CUDA); per-rank batch = --batch-size.")] = None,
        fsdp: Annotated[bool, typer.Option("--fsdp", help="Shard student and teacher over the processes (FSDP2 fully_shard); "
                                           "needs torchrun or --nproc.")] = False,
    ) -> None:
        """Distill a teacher into a smaller student, episode by episode (OPTIMA)."""
        from distillctl.errors import UsageError

        if nproc is not None:  # re-run this very command as N processes under PyTorch's own launcher
            launch(nproc, sys.argv)
            return
        con = console()
        if steps is not None and episodes is not None:
            raise UsageError("--steps and --episodes both set the run length; give only one.")
        flags = {
            "teacher": {"name": teacher, "weights": teacher_weights},
            "student": {"name": student},
            "policy": {"name": policy, "arms": arms},
            "data": {"name": data},
            "train": {"episodes": episodes, "episode_steps": episode_steps, "batch_size": batch_size, "lr": lr,
                      "device": device, "precision": precision, "seed": seed, "fsdp": True if fsdp else None,
                      "report_to": report_to},
            "export": {"dtype": export_dtype},
        }
        if resume:
            given = any(v is not None for t in flags.values() for v in t.values())
            if out is None or given or preset or steps or set_ or overwrite:
                raise UsageError("--resume takes only --out (and --quiet): the run continues with the config in OUT/run.toml.")
            from distillctl.config import load_toml, validate
            from distillctl.rundir import RunDir

            if _rank() == 0:  # rank 0 owns --out (the other ranks would see its lock)
                RunDir(out, resume=True).preflight()  # no checkpoint, a finished run, in use: one line, first
            if not (out / "run.toml").is_file():
                raise UsageError(f"nothing to resume in {out}: no run.toml.")
            cfg = validate(load_toml(out / "run.toml"), source=str(out / "run.toml"))
            run_with_display(cfg, out, overwrite=False, quiet=quiet, resume=True)
            return
        cfg, preset_name = build_config(preset, flags, list(set_ or []))
        if steps is not None:
            if steps < 1:
                raise UsageError(f"--steps must be at least 1, got {steps}.")
            cfg["train"]["episodes"] = max(1, math.ceil(steps / cfg["train"]["episode_steps"]))
        if preset is None and _rank() == 0:
            con.print(f"No --preset given: running the bundled '{DEFAULT_PRESET}' preset.", highlight=False,
                      style=None if quiet else "dim")
        out_dir = out or Path("runs") / f"{Path(preset_name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_with_display(cfg, out_dir, overwrite=overwrite, quiet=quiet)


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise); read from the env so torch is not imported."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _lost_peer(exc: BaseException) -> Exception | None:
    """A DistillctlError for a collective that failed because a peer rank is gone (else None)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or not isinstance(exc, RuntimeError):
        return None
    text = " ".join(str(exc).split())
    markers = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout", "broken pipe", "peer")
    if not any(m in text.lower() for m in markers):
        return None
    from distillctl.distributed import DistributedError

    return DistributedError(f"another rank stopped; this rank's collective failed ({type(exc).__name__}: {text[:200]})")


def launch(nproc: int, argv: list[str]) -> None:
    """``distillctl distill --nproc N ...`` = ``python -m torch.distributed.run --standalone --nproc_per_node N
    -m distillctl distill ...`` (the same arguments without ``--nproc``), in this process.

    A failing rank has printed its own one-line error; the launcher then ends the others and this
    command exits with that rank's exit code (1 when it was killed by a signal), without torchrun's
    traceback summary."""
    import logging

    from distillctl.errors import UsageError

    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}.")
    if "distill" not in argv:
        raise UsageError("--nproc re-runs `distillctl distill ...` from the command line; call it as a command.")
    args = argv[argv.index("distill"):]
    rest: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the failing rank speaks for itself
    parsed = get_args_parser().parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m", "distillctl", *rest])
    try:
        run(parsed)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode if failure.exitcode and failure.exitcode > 0 else 1
        raise typer.Exit(code) from None


def run_with_display(cfg: dict[str, Any], out_dir: Path, *, overwrite: bool, quiet: bool, resume: bool = False) -> dict[str, Any]:
    """Run the engine with a live progress display; clean up on failure; print the summary."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from distillctl.config import preflight_teacher
    from distillctl.rundir import RunDir

    main = _rank() == 0
    if main:  # under torchrun only rank 0 owns --out; the other ranks show nothing and write nothing
        RunDir(out_dir, overwrite=overwrite, resume=resume).preflight()  # an unusable --out fails first, in one line
    quiet = quiet or not main
    preflight_teacher(cfg)  # before torch is imported: unavailable weights fail in a second
    from distillctl import engine

    con = console()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=con,
        disable=quiet,
        transient=False,
    )
    task = None

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        nonlocal task
        if kind == "warning":  # e.g. a damaged checkpoint replaced by the previous one: shown even with --quiet
            con.print(f"warning: {payload['message']}", style="yellow", markup=False, highlight=False)
            return
        if quiet:
            return
        if kind == "status":
            con.print(f"[dim]{payload['message']}[/dim]")
        elif kind == "start":
            flops = payload.get("unit") == "flops"  # a compute budget: the bar is the share of the FLOPs spent
            done = payload.get("done", 0)
            task = progress.add_task(f"episode {done}" + ("" if flops else f"/{payload['episodes']}"),
                                     total=payload.get("total", payload["episodes"]),
                                     completed=payload.get("completed", done), info=f"arms: {', '.join(payload['arms'])}")
            progress.start()
        elif kind == "episode" and task is not None:
            info = (f"arm [cyan]{payload['arm']:<12}[/cyan] loss {payload['train'].get('total', float('nan')):.4g} "
                    f"probe {payload['probe_loss']:.4g} reward {payload['reward']:+.3f} "
                    f"{payload['samples_per_s']:.0f} samples/s")
            total = progress.tasks[0].total or 1
            where = (f"episode {payload['episode']}, {100 * payload['completed'] / total:.0f}% of the FLOPs"
                     if payload.get("unit") == "flops" else f"episode {payload['episode']}/{total:.0f}")
            progress.update(task, description=where, completed=payload.get("completed", payload["episode"]), info=info)

    try:  # the engine owns the cleanup rule (what is kept or removed when a run fails)
        report = engine.run(cfg, out_dir, overwrite=overwrite, on_event=on_event, resume=resume)
    except BaseException as exc:
        progress.stop()
        from distillctl import checkpoint
        from distillctl.rundir import RunDirError

        refused = isinstance(exc, (RunDirError, checkpoint.CheckpointError))  # resuming again would not help
        if main and checkpoint.exists(out_dir / "checkpoints") and not (out_dir / "student.safetensors").is_file():
            if not refused:
                con.print(f"[yellow]checkpoint kept: continue with `distillctl distill --resume --out {out_dir}`[/yellow]",
                          highlight=False)
        lost = _lost_peer(exc)
        if lost is not None:  # a collective failed because another rank died: one line, not a gloo/NCCL traceback
            raise lost from None
        raise
    progress.stop()
    if not main:
        return report
    from distillctl.report import print_run_summary

    print_run_summary(report, out_dir, quiet=quiet)
    return report
