"""``distillctl report``: re-render a run's views (terminal, report.md, report.html) from its report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distillctl.cli._common import console


def register(app: typer.Typer) -> None:
    @app.command("report", rich_help_panel="Distillation")
    def report(
        run: Annotated[Path, typer.Argument(help="A distill --out folder (or its report.json).")],
        html: Annotated[bool, typer.Option("--html", help="Re-write report.html.")] = False,
        md: Annotated[bool, typer.Option("--md", help="Re-write report.md.")] = False,
        terminal: Annotated[bool, typer.Option("--terminal", help="Print the terminal tables.")] = False,
    ) -> None:
        """Re-render a run's terminal tables, report.md and report.html from its report.json (default: all three)."""
        from distillctl.report import load_report, print_run_summary, write_views

        doc = load_report(run)
        run_dir = run if run.is_dir() else run.parent
        if not (html or md or terminal):  # no flag: all three views
            html = md = terminal = True
        written = write_views(doc, run_dir, md=md, html=html)
        if terminal:
            print_run_summary(doc, run_dir, quiet=False)
        else:
            console().print("wrote " + ", ".join(str(p) for p in written), highlight=False)
