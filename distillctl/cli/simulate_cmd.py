"""``distillctl simulate``: policies against synthetic non-stationary bandits (no torch, seconds)."""

from __future__ import annotations

import statistics
from typing import Annotated

import typer

from distillctl.cli._common import console, echo_json


def _floats(text: str, what: str) -> list[float]:
    from distillctl.errors import UsageError

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} takes comma-separated numbers, got {text!r}.") from None
    if not values:
        raise UsageError(f"{what} is empty.")
    return values


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Distillation")
    def simulate(
        policies: Annotated[str, typer.Option(help="Comma-separated policies.")] = "optima,uniform,fixed-order",
        means: Annotated[str, typer.Option(help="Mean reward of each arm at the start, e.g. 0.05,0.02,0.01.")] = "0.05,0.02,0.01",
        switch: Annotated[list[str] | None, typer.Option(help="EPISODE:MEANS, the means from that episode on (repeatable), e.g. 200:0.01,0.02,0.05.")] = None,
        episodes: Annotated[int, typer.Option(help="Episodes per run.")] = 400,
        seeds: Annotated[int, typer.Option(help="Runs per policy (seeds 0..N-1).")] = 10,
        noise: Annotated[float, typer.Option(help="Std of the reward noise.")] = 0.01,
        window: Annotated[int | None, typer.Option(help="optima's window (default: its own).")] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """Run policies against a synthetic non-stationary bandit (no torch): regret and best-arm share."""
        from rich.table import Table

        from distillctl.errors import UsageError
        from distillctl.simulate import simulate as run_sim

        if seeds < 1 or episodes < 1:
            raise UsageError("--seeds and --episodes must be at least 1.")
        schedule: list[tuple[int, list[float]]] = [(0, _floats(means, "--means"))]
        for item in switch or []:
            start, sep, rest = item.partition(":")
            if not sep or not start.strip().isdigit():
                raise UsageError(f"--switch takes EPISODE:MEANS, e.g. 200:0.01,0.02,0.05; got {item!r}.")
            schedule.append((int(start), _floats(rest, "--switch")))
        rows = []
        for name in [p.strip() for p in policies.split(",") if p.strip()]:
            options = {"window": window} if (window is not None and name == "optima") else None
            results = [run_sim(name, schedule, episodes, seed=s, noise=noise, options=options) for s in range(seeds)]
            regrets = [r["regret"] for r in results]
            best = [r["best_fraction"] for r in results]
            rows.append({
                "policy": name,
                "regret_mean": statistics.fmean(regrets),
                "regret_std": statistics.stdev(regrets) if seeds > 1 else 0.0,
                "best_fraction_mean": statistics.fmean(best),
                "best_fraction_std": statistics.stdev(best) if seeds > 1 else 0.0,
                "pulls": {a: sum(r["pulls"][a] for r in results) for a in results[0]["pulls"]},
            })
        doc = {"schedule": schedule, "episodes": episodes, "seeds": seeds, "noise": noise, "rows": rows}
        if json_:
            echo_json(doc)
            return
        table = Table(title=f"{seeds} seeds x {episodes} episodes, noise {noise}", title_justify="left")
        for c in ("policy", "regret", "best-arm share", "pulls"):
            table.add_column(c, justify="left" if c in ("policy", "pulls") else "right")
        for r in rows:
            table.add_row(r["policy"], f"{r['regret_mean']:.3f} ± {r['regret_std']:.3f}",
                          f"{r['best_fraction_mean']:.1%} ± {r['best_fraction_std']:.1%}",
                          ", ".join(f"{a}:{n}" for a, n in r["pulls"].items()))
        console().print(table)
