"""``distillctl eval``: score a distilled student (and its teacher, side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distillctl.cli._common import console, echo_json


def register(app: typer.Typer) -> None:
    @app.command("eval", rich_help_panel="Distillation")
    def eval_(
        run: Annotated[Path, typer.Argument(help="A distill --out folder (or its student.safetensors).")],
        data: Annotated[str | None, typer.Option(help="Data source (default: the run's).")] = None,
        split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "test",
        evaluators: Annotated[str | None, typer.Option(help="Comma-separated evaluators (see `distillctl plugins`); default: the model family's.")] = None,
        samples: Annotated[int, typer.Option(help="Items to evaluate.")] = 1000,
        teacher: Annotated[bool, typer.Option("--teacher/--no-teacher", help="Also score the run's teacher.")] = True,
        set_: Annotated[list[str] | None, typer.Option("--set", help="data.key=value options for the data source.")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
        json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """Evaluate a distilled student, and its teacher side by side."""

        from rich.table import Table

        from distillctl.config import apply_overrides, component_options, load_toml
        from distillctl.engine import resolve_device
        from distillctl.errors import DistillctlError, UsageError
        from distillctl.export import load_student
        from distillctl.plugins import registry
        from distillctl.report import fmt

        if samples < 1:
            raise UsageError(f"--samples must be at least 1, got {samples}.")
        names = [e.strip() for e in (evaluators or "").split(",") if e.strip()]
        for name in names:
            registry("evaluator").get(name)  # unknown names fail before any model is loaded
        if not run.exists():
            raise DistillctlError(f"no such run: {run}; pass the --out folder of a distill run.")
        run_dir = run if run.is_dir() else run.parent
        run_cfg = load_toml(run_dir / "run.toml") if (run_dir / "run.toml").is_file() else {}
        data_section = dict(run_cfg.get("data", {}))
        if data is not None and data != data_section.get("name"):
            data_section = {"name": data}
        if "name" not in data_section:
            raise DistillctlError(f"{run_dir} has no run.toml naming its data source; pass --data.")
        overridden = apply_overrides({"data": data_section}, list(set_ or []))
        if set(overridden) != {"data"}:
            raise UsageError("eval --set takes data.key=value options only, e.g. --set data.path=captions.json.")
        data_section = overridden["data"]
        entry = registry("dataset").get(data_section.get("name", ""))
        opts, valid = component_options(data_section, "data"), entry.options()
        unknown = [k for k in opts if valid is not None and k not in valid]
        if unknown:
            raise UsageError(f"data.{unknown[0]}: unknown option for dataset {entry.name!r} (valid: {', '.join(sorted(valid or {}))}).")
        dev = resolve_device(device)
        ds = registry("dataset").create(entry.name, split=split, **opts)
        student, meta = load_student(run, str(dev))
        family = registry("family").create(student.family)
        names = names or list(getattr(family, "evaluators", ())[:1])
        t_bundle = None
        if teacher:
            weights = meta.get("teacher_weights")
            t_bundle = registry("teacher").create(
                meta.get("teacher", "quickstart"),
                weights=None if weights in (None, "bundled") else weights,
                device=str(dev),
            )
        from distillctl.engine import evaluate_bundles

        results = evaluate_bundles(names, family, ds, student, t_bundle, device=str(dev), samples=samples)
        if json_:
            echo_json({"run": str(run_dir), "data": ds.describe(), **results})
            return
        table = Table(title=f"{ds.describe()}", title_justify="left")
        for c in ("metric", "student", *(["teacher", "student / teacher"] if teacher else [])):
            table.add_column(c, justify="left" if c == "metric" else "right")
        for k, s in results["student"].items():
            row = [k, fmt(s)]
            if teacher:
                tv = results["teacher"].get(k)
                row += [fmt(tv), f"{s / tv:.0%}" if tv else "-"]
            table.add_row(*row)
        console().print(table)
