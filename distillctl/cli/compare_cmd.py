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


def parse_entries(text: str) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """``optima[window=50]@combinations,uniform,fixed-order@all`` -> [(label, policy, arms or None, options)].

    ``NAME[key=value,...]`` sets policy options (the spec syntax ``simulate`` reads too, see
    :func:`distillctl.policies.parse_policy_spec`); ``@ARMS`` sets the arm set.
    """
    from distillctl.errors import UsageError
    from distillctl.policies import parse_policy_spec, split_policy_specs

    out = []
    labels: set[str] = set()
    for raw in split_policy_specs(text):
        tail = raw.rpartition("]")[2] if "]" in raw else raw  # '@' after the options (or anywhere without them)
        at = "@" in tail
        spec, arms = (raw[: len(raw) - len(tail)] + tail.partition("@")[0], tail.partition("@")[2]) if at else (raw, "")
        policy, options = parse_policy_spec(spec)
        label = raw.replace("@", "-")
        if label in labels:
            raise UsageError(f"--policies lists {raw!r} twice.")
        labels.add(label)
        out.append((label, policy, (arms or None) if at else None, options))
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]  # runs without a value (e.g. reports of an older version): left out
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def steps_to_target(report: dict[str, Any], target: float) -> int | None:
    for e in report["episodes"]:
        if e["probe"]["total"] <= target:
            return int(e["step"])
    return None


def compute_to_target(report: dict[str, Any], target: float) -> int | None:
    """Training FLOPs spent when the probe loss first reached ``target`` (episode ends; None: never)."""
    for e in report["episodes"]:
        if e["probe"]["total"] <= target and "flops_total" in e:
            return int(e["flops_total"])
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
        flops_hit = [float(f) for f in (compute_to_target(r, target) for r in reps) if f is not None]
        row["compute_to_target"] = mean_std(flops_hit) if flops_hit else (None, None)
        # what each run cost: training FLOPs (the budget), steps, seconds (compute = training steps only)
        row["flops"] = mean_std([float((r.get("compute") or {}).get("spent_flops", float("nan"))) for r in reps])
        row["steps"] = mean_std([float(r.get("steps", float("nan"))) for r in reps])
        row["compute_s"] = mean_std([float((r.get("timings") or {}).get("compute_s", float("nan"))) for r in reps])
        row["train_s"] = mean_std([float((r.get("timings") or {}).get("train_s", float("nan"))) for r in reps])
        metrics = sorted({k for r in reps for k in (r.get("eval") or {}).get("student", {})})
        row["eval"] = {k: mean_std([r["eval"]["student"][k] for r in reps if k in r["eval"].get("student", {})])
                       for k in metrics}
        pulls: dict[str, int] = {}
        for r in reps:
            for a in r["arms"]:
                pulls[a["arm"]] = pulls.get(a["arm"], 0) + a["pulls"]
        row["pulls"] = pulls
        # probe-loss curve of every seed (initial loss first): compare.html draws them
        row["curves"] = [[r.get("initial_probe", {}).get("total", float("nan")), *(e["probe"]["total"] for e in r["episodes"])]
                         for r in reps]
        row["curve_steps"] = [0, *(e.get("step", i + 1) for i, e in enumerate(reps[0]["episodes"]))]
        row["curves_flops"] = [[0, *(e.get("flops_total", float("nan")) for e in r["episodes"])] for r in reps]
        rows.append(row)
    return {"target_probe_loss": target, "rows": rows}


def _pm(ms: tuple[float | None, float | None], digits: int = 4) -> str:
    m, s = ms
    if m is None:
        return "-"
    return f"{m:.{digits}g} ± {s:.2g}"


def _flops(ms: tuple[float | None, float | None]) -> str:
    from distillctl.report import human_flops

    m, s = ms
    if m is None or m != m:
        return "-"
    return human_flops(m) + (f" ± {s / m:.0%}" if s else "")


def markdown(summary: dict[str, Any]) -> str:
    metrics = sorted({k for r in summary["rows"] for k in r["eval"]})
    t = f"{summary['target_probe_loss']:.4g}"
    head = ["policy", "seeds", "final probe loss", f"steps to {t}", f"compute to {t}", "training compute", "steps",
            *metrics, "pulls"]
    budget = summary.get("budget", "steps")
    lines = ["# distillctl compare", "", f"Budget: {'equal training FLOPs' if budget == 'flops' else 'equal steps'} "
             f"(train.budget = {budget}); mean ± std over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        cells = [r["label"], str(r["seeds"]), _pm(r["final_probe"]), f"{_pm(r['steps_to_target'])} ({r['reached']})",
                 _flops(r.get("compute_to_target", (None, None))), _flops(r.get("flops", (None, None))),
                 _pm(r.get("steps", (None, None))),
                 *(_pm(r["eval"].get(k, (None, None)), 3) for k in metrics),
                 ", ".join(f"{a}:{n}" for a, n in r["pulls"].items())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Distillation")
    def compare(
        policies: Annotated[str, typer.Option(help="Comma-separated policies: NAME[key=value,...]@ARMS, e.g. optima[window=50], fixed-order@all.")] = "optima,optima@combinations,uniform,fixed-order,fixed-order@all",
        seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
        preset: Annotated[str, typer.Option("--preset", "-p", help="Preset every run starts from.")] = "quickstart",
        set_: Annotated[list[str] | None, typer.Option("--set", help="section.key=value for every run (repeatable).")] = None,
        target: Annotated[float | None, typer.Option(help="Probe-loss target for steps-to-target (default: the loosest mean final loss).")] = None,
        budget: Annotated[str, typer.Option(help="What every run gets the same of: steps (episodes x episode-steps) or flops (training FLOPs; default amount: what those steps cost with every module and the full forward).")] = "steps",
        out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("runs/compare"),
        overwrite: Annotated[bool, typer.Option(help="Replace runs already in --out.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    ) -> None:
        """Run policies x seeds on the same budget and compare them (mean ± std)."""
        from rich.table import Table

        from distillctl.cli.distill_cmd import build_config
        from distillctl.errors import UsageError

        if budget not in ("steps", "flops"):
            raise UsageError(f"--budget must be steps or flops, got {budget!r}.")
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
        for label, policy, arms, options in entries:
            for seed in seed_list:
                flags = {"policy": {"name": policy, "arms": arms}, "train": {"seed": seed, "budget": budget}}
                sets = [*(set_ or []), *(f"policy.{k}={_toml(v)}" for k, v in options.items())]
                configs[(label, seed)] = build_config(preset, flags, sets)[0]

        from distillctl import engine

        con = console()
        runs: dict[str, list[dict[str, Any]]] = {}
        for i, ((label, seed), cfg) in enumerate(configs.items(), 1):
            if not quiet:
                con.print(f"[bold]run {i}/{len(configs)}[/bold]: {label}, seed {seed}")
            report = engine.run(cfg, out / _folder(label) / f"seed{seed}", overwrite=overwrite)
            runs.setdefault(label, []).append(report)
        summary = {**summarize(runs, target), "budget": budget}
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (out / "compare.md").write_text(markdown(summary), encoding="utf-8")
        from distillctl.report import render_compare_html

        (out / "compare.html").write_text(render_compare_html({**summary, "preset": preset, "seeds": seed_list}), encoding="utf-8")

        metrics = sorted({k for r in summary["rows"] for k in r["eval"]})
        if con.width < 120:  # the headline metrics fit a narrow terminal; compare.md has them all
            metrics = [m for m in metrics if m in ("i2t_r1", "tf_token_acc")] or metrics[:2]
        table = Table(title=f"{len(seed_list)} seed(s) per policy, preset {preset}, equal {budget}", title_justify="left")
        t = f"{summary['target_probe_loss']:.4g}"
        for c in ("policy", "final probe loss", f"steps to {t}", f"compute to {t}", *metrics):
            table.add_column(c, justify="left" if c == "policy" else "right")
        for r in summary["rows"]:
            table.add_row(r["label"], _pm(r["final_probe"]), f"{_pm(r['steps_to_target'])} ({r['reached']})",
                          _flops(r["compute_to_target"]),
                          *(_pm(r["eval"].get(k, (None, None)), 3) for k in metrics))
        con.print(table)
        con.print(f"wrote {out}/compare.json, compare.md and compare.html", highlight=False)


def _toml(value: Any) -> str:
    """A policy option as a ``--set`` value (TOML literal)."""
    from distillctl.config import dumps_toml

    return dumps_toml({"x": {"v": value}}).splitlines()[1].split(" = ", 1)[1]


def _folder(label: str) -> str:
    """A run folder name for a compare label (``optima[window=50]@all`` -> ``optima-window=50-all``)."""
    import re

    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9=._+-]+", "-", label)).strip("-")
