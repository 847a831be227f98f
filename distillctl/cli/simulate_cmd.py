"""``distillctl simulate``: policies against synthetic non-stationary bandits (no torch, seconds).

Two modes: one bandit given by ``--means`` / ``--switch`` (regret, best-arm share and pulls per
policy), or ``--suite``: every registered policy (or ``--policies``) on the whole environment suite
of :func:`distillctl.simulate.suite`, paired seeds, at each of ``--horizons``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Annotated, Any

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


def _ints(text: str, what: str) -> list[int]:
    from distillctl.errors import UsageError

    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} takes comma-separated whole numbers, got {text!r}.") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{what} takes positive whole numbers, got {text!r}.")
    return values


def _default_suite_policies() -> list[str]:
    """Every registered policy that runs without a variant (prefix entries need ``name:variant``), once
    (two plugins registering one name list it twice: resolving it then explains the clash)."""
    from distillctl.plugins import registry

    policies = registry("policy")  # a plugin policy a built-in shadows runs as PLUGIN/NAME
    return list(dict.fromkeys(policies.key_of(e) for e in policies if not e.is_prefix))


def _usable(spec: str, window: int | None, warn: bool) -> tuple[str, Any, dict[str, Any]] | None:
    """``(spec, factory, options)``, checked before anything runs. A policy named by ``--policies`` that
    cannot run is an error; one the suite picked by itself (every registered policy) is skipped with a
    warning line naming the plugin, so one broken plugin cannot take the suite down."""
    from distillctl.errors import DistillctlError
    from distillctl.simulate import resolve_policy
    from distillctl.simulate import simulate as run_sim

    try:
        factory, options = resolve_policy(spec)
        _, extra = _with_window(spec, window)
        options = {**options, **extra}
        if warn:  # a short trial: a policy whose select/update fails is found before the suite's hours of runs
            run_sim(factory, [(0, [0.03, 0.02, 0.01])], 12, seed=0, noise=0.01, options=options)
    except DistillctlError as exc:
        if not warn:
            raise
        console(stderr=True).print(f"warning: skipped {spec}: {exc}", style="yellow", markup=False, highlight=False)
        return None
    return spec, factory, options


def _with_window(spec: str, window: int | None) -> tuple[str, dict[str, Any]]:
    """The legacy ``--window``: an option for every policy spec whose name resolves to ``optima``."""
    from distillctl.plugins import registry
    from distillctl.policies import parse_policy_spec

    if window is None:
        return spec, {}
    name, _ = parse_policy_spec(spec)
    found = registry("policy").resolve(name)
    assert found is not None
    return spec, ({"window": window} if found[0].name == "optima" else {})


def _write_html(path: Path, doc: dict[str, Any]) -> None:
    from distillctl.errors import DistillctlError
    from distillctl.report import render_simulate_html

    try:
        path.write_text(render_simulate_html(doc), encoding="utf-8")
    except OSError as exc:
        raise DistillctlError(f"cannot write {path}: {exc.strerror or exc}.") from None


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Distillation")
    def simulate(
        policies: Annotated[str | None, typer.Option(help="Comma-separated policy specs, e.g. optima[window=50],sw-ts,uniform (default: optima,uniform,fixed-order; with --suite every registered policy).")] = None,
        means: Annotated[str, typer.Option(help="Mean reward of each arm at the start, e.g. 0.05,0.02,0.01.")] = "0.05,0.02,0.01",
        switch: Annotated[list[str] | None, typer.Option(help="EPISODE:MEANS, the means from that episode on (repeatable), e.g. 200:0.01,0.02,0.05.")] = None,
        episodes: Annotated[int, typer.Option(help="Episodes per run (one bandit).")] = 400,
        seeds: Annotated[int | None, typer.Option(help="Runs per policy, seeds 0..N-1, paired across policies (default 10; 20 with --suite).")] = None,
        noise: Annotated[float, typer.Option(help="Std of the reward noise (one bandit).")] = 0.01,
        window: Annotated[int | None, typer.Option(help="optima's window (same as optima[window=N]).")] = None,
        suite: Annotated[bool, typer.Option("--suite", help="Run the environment suite (decay, switch, drift, decay-together; 3 and 7 arms; 3 noise levels) instead of one bandit.")] = False,
        horizons: Annotated[str, typer.Option(help="With --suite: comma-separated episode counts.")] = "60,500",
        json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
        html: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML page to this file.")] = None,
    ) -> None:
        """Run policies against synthetic non-stationary bandits (no torch): regret and best-arm share."""
        from distillctl.errors import UsageError
        from distillctl.policies import split_policy_specs
        from distillctl.simulate import run_suite
        from distillctl.simulate import simulate as run_sim

        n_seeds = seeds if seeds is not None else (20 if suite else 10)
        if n_seeds < 1 or episodes < 1:
            raise UsageError("--seeds and --episodes must be at least 1.")
        if policies is not None:
            specs = split_policy_specs(policies)
            if not specs:
                raise UsageError("--policies is empty.")
        else:
            specs = _default_suite_policies() if suite else ["optima", "uniform", "fixed-order"]
        if len(set(specs)) != len(specs):
            raise UsageError(f"--policies lists a policy twice: {', '.join(specs)}.")
        # every spec is checked (name, options) before anything runs
        resolved = [r for spec in specs if (r := _usable(spec, window, warn=policies is None and suite)) is not None]
        if not resolved:
            raise UsageError("no policy can run (see the warnings above); pass --policies.")

        if suite:
            doc: dict[str, Any] = run_suite(resolved, horizons=_ints(horizons, "--horizons"), seeds=n_seeds)
            doc["normalisation"] = "regret / expected regret of uniform random play, per scenario and horizon"
            if html is not None:
                _write_html(html, doc)
            if json_:
                echo_json(doc)
                return
            _print_suite(doc)
            return

        schedule: list[tuple[int, list[float]]] = [(0, _floats(means, "--means"))]
        for item in switch or []:
            start, sep, rest = item.partition(":")
            if not sep or not start.strip().isdigit():
                raise UsageError(f"--switch takes EPISODE:MEANS, e.g. 200:0.01,0.02,0.05; got {item!r}.")
            schedule.append((int(start), _floats(rest, "--switch")))
        rows = []
        for spec, factory, options in resolved:
            results = [run_sim(factory, schedule, episodes, seed=s, noise=noise, options=options) for s in range(n_seeds)]
            regrets = [r["regret"] for r in results]
            best = [r["best_fraction"] for r in results]
            rows.append({
                "policy": spec,
                "regret_mean": statistics.fmean(regrets),
                "regret_std": statistics.stdev(regrets) if n_seeds > 1 else 0.0,
                "best_fraction_mean": statistics.fmean(best),
                "best_fraction_std": statistics.stdev(best) if n_seeds > 1 else 0.0,
                "pulls": {a: sum(r["pulls"][a] for r in results) for a in results[0]["pulls"]},
            })
        doc = {"schedule": schedule, "episodes": episodes, "seeds": n_seeds, "noise": noise, "rows": rows}
        if html is not None:
            _write_html(html, doc)
        if json_:
            echo_json(doc)
            return
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{n_seeds} seeds x {episodes} episodes, noise {noise}", title_justify="left")
        for c in ("policy", "regret", "best-arm share", "pulls"):
            table.add_column(c, justify="left" if c in ("policy", "pulls") else "right")
        for r in rows:
            table.add_row(escape(r["policy"]), f"{r['regret_mean']:.3f} ± {r['regret_std']:.3f}",
                          f"{r['best_fraction_mean']:.1%} ± {r['best_fraction_std']:.1%}",
                          ", ".join(f"{a}:{n}" for a, n in r["pulls"].items()))
        console().print(table)


def _print_suite(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    hs = doc["horizons"]
    table = Table(title=f"{len(doc['scenarios'])} scenarios x {doc['seeds']} paired seeds. regret: / uniform play's "
                        "(lower is better); rank: mean across scenarios; best: share of episodes on the best arm",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("policy", no_wrap=True)
    for what in ("regret", "rank", "best"):
        for h in hs:
            table.add_column(f"{what} {h}", justify="right", no_wrap=True)
    for r in doc["rows"]:
        table.add_row(escape(r["policy"]), *(f"{r['regret'][h]:.3f}" for h in hs), *(f"{r['rank'][h]:.2f}" for h in hs),
                      *(f"{r['best_share'][h]:.1%}" for h in hs))
    console().print(table)
