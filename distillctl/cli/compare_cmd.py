"""``distillctl compare``: policies x seeds on the same budget, so claims about OPTIMA are measured.

Every (policy, seed) pair is a full ``distill`` run from the same preset into ``OUT/<label>/seed<N>``;
the summary gives mean ± std over seeds of the final probe loss and of every evaluation metric, and
the steps each needs to reach a common probe-loss target. ``compare.json`` is the truth,
``compare.md`` a rendering.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer

from distillctl.cli._common import console


def parse_entries(text: str) -> list[tuple[str, str, str | None]]:
    """``optima,uniform,fixed-order@all`` -> [(label, policy, arms or None)]."""
    out = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        policy, _, arms = raw.partition("@")
        out.append((raw.replace("@", "-"), policy, arms or None))
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def steps_to_target(report: dict[str, Any], target: float) -> int | None:
    for e in report["episodes"]:
        if e["probe"]["total"] <= target:
            return int(e["step"])
    return None


def summarize(runs: dict[str, list[dict[str, Any]]], target: float | None) -> dict[str, Any]:
    finals = {label: [r["final_probe"]["total"] for r in reps] for label, reps in runs.items()}
    if target is None:  # the loosest mean final loss: a target every policy reaches on average
        target = max(statistics.fmean(v) for v in finals.values())
    rows = []
    for label, reps in runs.items():
        row: dict[str, Any] = {"label": label, "seeds": len(reps), "policy": reps[0]["config"]["policy"]["name"],
                               "arms": reps[0]["config"]["policy"]["arms"]}
        row["final_probe"] = mean_std(finals[label])
        reached = [steps_to_target(r, target) for r in reps]
        hit = [s for s in reached if s is not None]
        row["steps_to_target"] = mean_std([float(s) for s in hit]) if hit else (None, None)
        row["reached"] = f"{len(hit)}/{len(reps)}"
        metrics = sorted({k for r in reps for k in (r.get("eval") or {}).get("student", {})})
        row["eval"] = {k: mean_std([r["eval"]["student"][k] for r in reps if k in r["eval"].get("student", {})])
                       for k in metrics}
        pulls: dict[str, int] = {}
        for r in reps:
            for a in r["arms"]:
                pulls[a["arm"]] = pulls.get(a["arm"], 0) + a["pulls"]
        row["pulls"] = pulls
        rows.append(row)
    return {"target_probe_loss": target, "rows": rows}


def _pm(ms: tuple[float | None, float | None], digits: int = 4) -> str:
    m, s = ms
    if m is None:
        return "-"
    return f"{m:.{digits}g} ± {s:.2g}"


def markdown(summary: dict[str, Any]) -> str:
    metrics = sorted({k for r in summary["rows"] for k in r["eval"]})
    head = ["policy", "seeds", "final probe loss", f"steps to {summary['target_probe_loss']:.4g}", *metrics, "pulls"]
    lines = ["# distillctl compare", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        cells = [r["label"], str(r["seeds"]), _pm(r["final_probe"]), f"{_pm(r['steps_to_target'])} ({r['reached']})",
                 *(_pm(r["eval"].get(k, (None, None)), 3) for k in metrics),
                 ", ".join(f"{a}:{n}" for a, n in r["pulls"].items())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Distillation")
    def compare(
        policies: Annotated[str, typer.Option(help="Comma-separated policies; NAME@ARMS sets the arm set, e.g. fixed-order@all.")] = "optima,uniform,fixed-order,fixed-order@all",
        seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
        preset: Annotated[str, typer.Option("--preset", "-p", help="Preset every run starts from.")] = "quickstart",
        set_: Annotated[list[str] | None, typer.Option("--set", help="section.key=value for every run (repeatable).")] = None,
        target: Annotated[float | None, typer.Option(help="Probe-loss target for steps-to-target (default: the loosest mean final loss).")] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("runs/compare"),
        overwrite: Annotated[bool, typer.Option(help="Replace runs already in --out.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    ) -> None:
        """Run policies x seeds on the same budget and compare them (mean ± std)."""
        from rich.table import Table

        from distillctl.cli.distill_cmd import build_config
        from distillctl.errors import UsageError

        entries = parse_entries(policies)
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds takes comma-separated integers, got {seeds!r}.") from None
        if not entries or not seed_list:
            raise UsageError("compare needs at least one policy (--policies) and one seed (--seeds).")
        if (out / "compare.json").exists() and not overwrite:
            raise UsageError(f"--out {out} already holds a comparison; pass --overwrite or choose another --out.")
        # validate every configuration before the first run starts
        configs = {}
        for label, policy, arms in entries:
            for seed in seed_list:
                flags = {"policy": {"name": policy, "arms": arms}, "train": {"seed": seed}}
                configs[(label, seed)] = build_config(preset, flags, list(set_ or []))[0]

        from distillctl import engine

        con = console()
        runs: dict[str, list[dict[str, Any]]] = {}
        for i, ((label, seed), cfg) in enumerate(configs.items(), 1):
            if not quiet:
                con.print(f"[bold]run {i}/{len(configs)}[/bold]: {label}, seed {seed}")
            report = engine.run(cfg, out / label / f"seed{seed}", overwrite=overwrite)
            runs.setdefault(label, []).append(report)
        summary = summarize(runs, target)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (out / "compare.md").write_text(markdown(summary), encoding="utf-8")

        metrics = sorted({k for r in summary["rows"] for k in r["eval"]})
        if con.width < 120:  # the headline metrics fit a narrow terminal; compare.md has them all
            metrics = [m for m in metrics if m in ("i2t_r1", "tf_token_acc")] or metrics[:2]
        table = Table(title=f"{len(seed_list)} seed(s) per policy, preset {preset}", title_justify="left")
        for c in ("policy", "final probe loss", f"steps to {summary['target_probe_loss']:.4g}", *metrics):
            table.add_column(c, justify="left" if c == "policy" else "right")
        for r in summary["rows"]:
            table.add_row(r["label"], _pm(r["final_probe"]), f"{_pm(r['steps_to_target'])} ({r['reached']})",
                          *(_pm(r["eval"].get(k, (None, None)), 3) for k in metrics))
        con.print(table)
        con.print(f"wrote {out}/compare.json and compare.md", highlight=False)
