"""``distillctl``, ``distillctl --help`` and ``--version`` without importing Typer, rich or pluggy.

The console script enters through :func:`main`: those three answers are printed from the table below
in a few milliseconds (Typer's rich help alone imports ~0.3 s of modules); every other command line
goes to the Typer app (:mod:`distillctl.cli`). ``tests/test_cli_foundation.py`` checks that this table
lists exactly the app's commands, panels and one-line helps, so the fast help cannot drift.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

DESCRIPTION = (
    "Compress multimodal foundation models (open_clip CoCa) by module-wise adaptive layerwise distillation (OPTIMA).",
    "Set DISTILLCTL_DEBUG=1 to see tracebacks, DISTILLCTL_DISABLE_PLUGINS=a,b to block plugins.",
)
OPTIONS = (("--version", "-V", "Show the version and exit."), ("--help", "-h", "Show this message and exit."))
# (panel, command, first line of its help), in the order the app lists them
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("Commands", "plugins", "List every registered component (built-in and third-party), name clashes and broken plugins."),
    ("Commands", "inspect", "Sizes, layer map, projections and training-memory estimate of a teacher (and student), no weights read."),
    ("Commands", "presets", "Bundled run configs (presets): list them, show one, validate one with overrides."),
    ("Distillation", "distill", "Distill a teacher into a smaller student, episode by episode (OPTIMA)."),
    ("Distillation", "eval", "Evaluate a model: a student next to its teacher (with ratios), or any model alone."),
    ("Distillation", "compare", "Run policies x seeds on the same budget and compare them (mean ± std)."),
    ("Distillation", "simulate", "Run policies against synthetic non-stationary bandits (no torch): regret and best-arm share."),
    ("Distillation", "report", "Re-render a run's terminal tables, report.md and report.html from its report.json (default: all three)."),
    ("Sharing", "export", "Re-export a finished student: another dtype (fp16 halves the file), or the Hugging Face Hub layout."),
    ("Sharing", "push", "Upload a student to the Hugging Face Hub in open_clip's layout, with a generated model card."),
)


def _box(title: str, rows: list[tuple[str, str]], width: int) -> list[str]:
    """A rounded box like Typer's rich panels: ``name  help`` rows, the help wrapped to the box."""
    name_w = max(len(n) for n, _ in rows)
    inner = width - 4
    text_w = max(20, inner - name_w - 2)
    out = [f"╭─ {title} " + "─" * max(0, width - len(title) - 5) + "╮"]
    for name, text in rows:
        lines = textwrap.wrap(text, text_w) or [""]
        for i, line in enumerate(lines):
            cell = f"{(name if i == 0 else ''):<{name_w}}  {line}"
            out.append(f"│ {cell:<{inner}} │")
    out.append("╰" + "─" * (width - 2) + "╯")
    return out


def render(width: int | None = None) -> str:
    width = max(60, min(width or shutil.get_terminal_size((100, 24)).columns, 120))
    lines = ["", " Usage: distillctl [OPTIONS] COMMAND [ARGS]...", ""]
    for para in DESCRIPTION:
        lines += [" " + line for line in textwrap.wrap(para, width - 2)] + [""]
    lines += _box("Options", [(f"{long:<10} {short}", text) for long, short, text in OPTIONS], width)
    for panel in dict.fromkeys(p for p, _, _ in COMMANDS):
        lines += _box(panel, [(c, t) for p, c, t in COMMANDS if p == panel], width)
    return "\n".join(lines) + "\n\n"


def main() -> None:
    """Console-script entry point (``distillctl``)."""
    args = sys.argv[1:]
    if args in ([], ["--help"], ["-h"]) and not os.environ.get("DISTILLCTL_DEBUG"):
        sys.stdout.write(render())
        return
    if args in (["--version"], ["-V"]):
        from distillctl import __version__

        sys.stdout.write(f"distillctl {__version__}\n")
        return
    from distillctl.cli import main as cli_main

    cli_main()
