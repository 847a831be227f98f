"""Reports: ``report.json`` is the truth; ``report.md``, ``report.html`` and the terminal tables are views of it.

The views are pure functions of the dict (``markdown``, ``render_run_html``, ``print_run_summary``),
so ``distillctl report RUN`` can re-render all of them from a ``report.json`` alone. Every view
tolerates missing keys (older reports, failed runs) and shows an ``error`` key prominently.

``render_compare_html`` and ``render_simulate_html`` render the documents of ``distillctl compare``
and ``distillctl simulate`` the same way. Charts come from :mod:`distillctl.charts` (matplotlib,
inline SVG); the pages are self-contained: no script, no stylesheet, no font, no image is fetched.
"""

from __future__ import annotations

import datetime
import html
import json
import math
from pathlib import Path
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"
REPORT_FILES = ("report.json", "report.md", "report.html")  # what write_reports writes into a run directory


def sparkline(values: list[float]) -> str:
    vals = [v for v in values if isinstance(v, (int, float)) and v == v]  # drop NaN and missing
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in vals)


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def human_params(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def human_flops(n: Any) -> str:
    """``6.1e12`` -> ``6.10 TFLOP`` (training compute in tables)."""
    if not isinstance(n, (int, float)) or isinstance(n, bool) or not math.isfinite(n):
        return "-"
    for div, unit in ((1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:,.0f} FLOP"


def dig(doc: Any, *keys: Any, default: Any = None) -> Any:
    """``doc[k1][k2]...`` or ``default`` when any level is missing or of the wrong type."""
    for k in keys:
        try:
            doc = doc[k]
        except (KeyError, IndexError, TypeError):
            return default
    return default if doc is None else doc


def eval_rows(report: dict[str, Any]) -> list[tuple[str, float | None, float | None, float | None]]:
    """(metric, student, teacher, student/teacher) for every metric in the report's eval."""
    ev = report.get("eval") or {}
    student, teacher = ev.get("student") or {}, ev.get("teacher") or {}
    rows = []
    for k in student:
        s, t = student.get(k), teacher.get(k)
        ok = isinstance(s, (int, float)) and isinstance(t, (int, float)) and t
        rows.append((k, s, t, (s / t) if ok else None))
    return rows


def _title(report: dict[str, Any]) -> str:
    teacher = dig(report, "config", "teacher", "name") or dig(report, "teacher", "name", default="?")
    student = dig(report, "config", "student", "name", default="?")
    policy = dig(report, "config", "policy", "name", default="?")
    return f"{teacher} → {student} ({policy})"


def _meta_parts(report: dict[str, Any]) -> list[str]:
    env, t = report.get("environment") or {}, report.get("timings") or {}
    parts = [f"distillctl {report['distillctl_version']}"] if report.get("distillctl_version") else []
    if env.get("torch"):
        parts.append(f"torch {env['torch']}")
    if env.get("device"):
        parts.append(f"device {env['device']}" + (f" ({env['cuda']})" if env.get("cuda") else ""))
    if report.get("world_size"):
        parts.append(f"world size {report['world_size']}")
    if report.get("steps") is not None:
        parts.append(f"{fmt(report['steps'])} steps")
    if report.get("samples") is not None:
        parts.append(f"{fmt(report['samples'])} samples")
    if isinstance(t.get("total_s"), (int, float)):
        train = f" ({t['train_s']:.1f}s training)" if isinstance(t.get("train_s"), (int, float)) else ""
        parts.append(f"{t['total_s']:.1f}s total{train}")
    return parts


def _size_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    sizes = report.get("sizes") or {}
    if not sizes:
        return []
    file = "-"
    if isinstance(sizes.get("student_file_bytes"), (int, float)):
        file = f"{sizes['student_file_bytes'] / 1e6:.2f} MB" + (f" ({sizes['export_dtype']})" if sizes.get("export_dtype") else "")
    comp = sizes.get("compression")
    return [("teacher", human_params(sizes.get("teacher_params")), "-"),
            ("student", human_params(sizes.get("student_params")), file),
            ("compression", f"{comp:.2f}×" if isinstance(comp, (int, float)) else "-", "")]


def _timing_line(report: dict[str, Any]) -> str | None:
    t = report.get("timings") or {}
    if not isinstance(t.get("train_s"), (int, float)):
        return None

    def s(k: str) -> str:
        return f"{t[k]:.1f}s" if isinstance(t.get(k), (int, float)) else "-"

    line = f"training {s('train_s')}: compute {s('compute_s')}, data {s('data_s')}, probe {s('probe_s')}"
    if isinstance(t.get("compute_fraction"), (int, float)):
        line += f" (compute fraction {t['compute_fraction']:.2f})"
    if isinstance(t.get("samples_per_s"), (int, float)):
        line += f"; {t['samples_per_s']:.1f} samples/s"
    return line


def _eval_title(report: dict[str, Any]) -> str:
    data, split = dig(report, "config", "data", "name"), dig(report, "config", "eval", "split")
    where = " ".join(x for x in (data, f"{split} split" if split else None) if x)
    return f"Evaluation ({where})" if where else "Evaluation"


def _probe_totals(report: dict[str, Any]) -> list[float]:
    return [dig(report, "initial_probe", "total")] + [dig(e, "probe", "total") for e in report.get("episodes") or []]


# ------------------------------------------------------------------------------------------- Markdown


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# distillctl report: {_title(report)}", ""]
    if report.get("error"):
        lines += [f"> **error:** {report['error']}", ""]
    meta = _meta_parts(report)
    if meta:
        lines += [" · ".join(meta), ""]
    sizes = _size_rows(report)
    if sizes:
        lines += ["## Sizes", "", "| | parameters | file |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in sizes]
        lines.append("")
    if report.get("arms"):
        lines += ["## Arms", "", "| arm | pulls | mean reward |", "|---|---|---|"]
        for a in report["arms"]:
            lines.append(f"| {a.get('arm')} | {a.get('pulls', '-')} | {fmt(a.get('mean_reward'))} |")
        lines.append("")
    eps = report.get("episodes") or []
    if eps:
        lines += [
            "## Episodes",
            "",
            f"probe loss: `{sparkline(_probe_totals(report))}` "
            f"({fmt(dig(report, 'initial_probe', 'total'))} → {fmt(dig(report, 'final_probe', 'total'))})",
            "",
            "| episode | arm | reward | probe loss | train loss | lr | steps | compute | compute s | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for e in eps:
            lines.append(
                f"| {e.get('episode', '-')} | {e.get('arm', '-')} | {fmt(e.get('reward'))} | {fmt(e.get('probe_loss'))} | "
                f"{fmt(dig(e, 'train', 'total'))} | {fmt(e.get('lr'), 3)} | {fmt(e.get('steps'))} | "
                f"{human_flops(e.get('flops'))} | {fmt(e.get('compute_s'), 3)} | {fmt(e.get('wall_s'), 3)} |"
            )
        lines.append("")
    rows = eval_rows(report)
    if rows:
        lines += [f"## {_eval_title(report)}", "",
                  "| metric | student | teacher | student / teacher |", "|---|---|---|---|"]
        for k, s, t, r in rows:
            lines.append(f"| {k} | {fmt(s)} | {fmt(t)} | {'-' if r is None else f'{r:.0%}'} |")
        lines.append("")
    if dig(report, "skipped", "summary"):
        lines += [f"Data: {report['skipped']['summary']}", ""]
    timing = _timing_line(report)
    if timing:
        lines += ["## Timings", "", f"- {timing}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- terminal


def policy_not_consulted(report: dict[str, Any]) -> str | None:
    """One line when the run ended without its policy choosing a single arm (every episode a burn-in), else None."""
    episodes = report.get("episodes") or []
    if not episodes or not all(e.get("burn_in") for e in episodes):
        return None
    name = dig(report, "config", "policy", "name") or "the policy"
    return (f"policy {name!r} was never consulted: all {len(episodes)} episodes were burn-in (learning-rate warm-up), "
            "so this run says nothing about it; raise train.episodes, lower train.warmup_steps, or set loss.warmup_rewards=true.")


def print_run_summary(report: dict[str, Any], out_dir: Path, quiet: bool = False) -> None:
    """The terminal view of a run: rich tables (arms, probe loss, size, eval), or one line when ``quiet``."""
    from rich.table import Table

    from distillctl.terminal import console

    con = console()
    rows = eval_rows(report)
    r1 = next(((s, t) for k, s, t, _ in rows if k == "i2t_r1"), None)
    summary = dig(report, "skipped", "summary")
    if report.get("error"):
        con.print(f"[red bold]run error:[/red bold] {report['error']}", highlight=False)
    unused = policy_not_consulted(report)
    if unused:
        con.print(f"warning: {unused}", style="yellow", markup=False, highlight=False)
    if quiet:
        file_bytes = dig(report, "sizes", "student_file_bytes")
        line = f"wrote {out_dir}/student.safetensors"
        if isinstance(file_bytes, (int, float)):
            line += f" ({file_bytes / 1e6:.2f} MB)"
        if r1 and r1[1] and r1[0] is not None:
            line += f"; i2t R@1 student {r1[0]:.3f} vs teacher {r1[1]:.3f} ({r1[0] / r1[1]:.0%})"
        con.print(line, highlight=False)
        if summary:
            con.print(summary, highlight=False)
        return

    if report.get("arms"):
        arms = Table(title="Arms", title_justify="left")
        arms.add_column("arm")
        arms.add_column("pulls", justify="right")
        arms.add_column("mean reward", justify="right")
        arms.add_column("timeline")
        timeline = [e.get("arm") for e in report.get("episodes") or []]
        for a in report["arms"]:
            marks = "".join("█" if x == a.get("arm") else "·" for x in timeline)
            arms.add_row(str(a.get("arm")), str(a.get("pulls", "-")), fmt(a.get("mean_reward")), marks)
        con.print(arms)

    initial, final = report.get("initial_probe") or {}, report.get("final_probe") or {}
    if initial or final:
        losses = Table(title="Probe loss (held-out, all modules)", title_justify="left")
        losses.add_column("term")
        losses.add_column("start", justify="right")
        losses.add_column("end", justify="right")
        for k in dict.fromkeys([*initial, *final]):
            losses.add_row(k, fmt(initial.get(k)), fmt(final.get(k)))
        losses.caption = "total: " + sparkline(_probe_totals(report))
        con.print(losses)

    sizes = _size_rows(report)
    if sizes:
        size = Table(title="Size", title_justify="left")
        size.add_column("")
        size.add_column("parameters", justify="right")
        size.add_column("file", justify="right")
        for row in sizes:
            size.add_row(*row)
        con.print(size)

    if rows:
        ev = Table(title=_eval_title(report), title_justify="left")
        for c in ("metric", "student", "teacher", "student / teacher"):
            ev.add_column(c, justify="left" if c == "metric" else "right")
        for k, s, t, r in rows:
            ev.add_row(k, fmt(s), fmt(t), f"{r:.0%}" if r is not None else "-")
        con.print(ev)
    if r1 and r1[1] and r1[0] is not None:
        con.print(f"image→text R@1: student [bold]{r1[0]:.3f}[/bold] vs teacher [bold]{r1[1]:.3f}[/bold] "
                  f"({r1[0] / r1[1]:.0%} of the teacher)")
    if summary:
        con.print(f"[yellow]{summary}[/yellow]", highlight=False)
    t = report.get("timings") or {}
    took = ""
    if isinstance(t.get("total_s"), (int, float)):
        took = f" in {t['total_s']:.1f}s"
        if isinstance(t.get("samples_per_s"), (int, float)):
            took += f" ({t['samples_per_s']:.0f} samples/s)"
    con.print(f"[green]done[/green]{took}: {out_dir}/student.safetensors, report.json, report.md, report.html, run.toml",
              highlight=False)


# ----------------------------------------------------------------------------------------------- HTML

_CSS = """
:root { --fg: #1d1d1f; --muted: #6e6e73; --line: #e3e3e6; --bg: #ffffff; --soft: #f6f6f8; --accent: #1f77b4; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--soft); color: var(--fg);
       font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 0 0 10px; }
.meta { color: var(--muted); font-size: 13px; margin-bottom: 18px; }
section { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 16px 18px; margin: 14px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0; }
.card { flex: 1 1 160px; background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 600; margin-top: 2px; }
.card .s { color: var(--muted); font-size: 12px; }
.chart svg { width: 100%; height: auto; display: block; }
.error { background: #fdecea; border: 1px solid #f5c2bd; color: #8a1c12; border-radius: 8px; padding: 12px 16px;
         margin: 14px 0; font-weight: 600; }
.warn { background: #fff8e1; border: 1px solid #f3df9b; border-radius: 8px; padding: 10px 14px; margin: 14px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { color: var(--muted); font-weight: 600; background: var(--soft); }
th:first-child, td:first-child { text-align: left; }
td.l, th.l { text-align: left; white-space: normal; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.grid2 section { margin: 0; }
.scroll { max-height: 420px; overflow: auto; }
details summary { cursor: pointer; color: var(--muted); }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; }
code { font-size: 12px; background: var(--soft); padding: 1px 4px; border-radius: 3px; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _page(title: str, body: list[str]) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        *body,
        f"<footer>Rendered by distillctl on {stamp}. Self-contained: charts are inline SVG, nothing is fetched.</footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ])


def _table(head: list[str], rows: list[list[Any]], left: tuple[int, ...] = (0,)) -> str:
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="l"' if i in left else ""
        return f"<{tag}{cls}>{_e(v)}</{tag}>"

    out = ["<table>", "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr>"]
    out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows]
    out.append("</table>")
    return "\n".join(out)


def _section(title: str, *parts: str | None, cls: str = "") -> str:
    inner = [p for p in parts if p]
    klass = f' class="{cls}"' if cls else ""
    return f"<section{klass}>\n<h2>{_e(title)}</h2>\n" + "\n".join(inner) + "\n</section>"


def _chart(svg: str | None) -> str | None:
    return f'<div class="chart">{svg}</div>' if svg else None


def _card(key: str, value: str, sub: str = "") -> str:
    return (f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div>'
            f'<div class="s">{_e(sub)}</div></div>')


def _error_box(doc: dict[str, Any]) -> list[str]:
    err = doc.get("error")
    if not err:
        return []
    text = err if isinstance(err, str) else json.dumps(err, default=str)
    return [f'<div class="error">Run error: {_e(text)}</div>']


def render_run_html(report: dict[str, Any]) -> str:
    """``report.html``: one self-contained page for a distill run (charts + tables), from ``report.json``'s dict."""
    from distillctl import charts

    title = _title(report)
    body = [f"<h1>distillctl report: {_e(title)}</h1>", f'<div class="meta">{_e(" · ".join(_meta_parts(report)))}</div>']
    body += _error_box(report)

    # headline cards
    cards = []
    comp = dig(report, "sizes", "compression")
    if isinstance(comp, (int, float)):
        cards.append(_card("compression", f"{comp:.2f}×",
                           f"{human_params(dig(report, 'sizes', 'teacher_params'))} → "
                           f"{human_params(dig(report, 'sizes', 'student_params'))} params"))
    p0, p1 = dig(report, "initial_probe", "total"), dig(report, "final_probe", "total")
    if isinstance(p1, (int, float)):
        drop = f"from {fmt(p0)} ({(p0 - p1) / p0:.0%} lower)" if isinstance(p0, (int, float)) and p0 else ""
        cards.append(_card("final probe loss", fmt(p1), drop))
    eps = report.get("episodes") or []
    if eps:
        cards.append(_card("episodes", fmt(len(eps)), f"{fmt(report.get('steps'))} steps, policy "
                                                      f"{dig(report, 'config', 'policy', 'name', default='?')}"))
    rows = eval_rows(report)
    headline = next((r for r in rows if r[0] == "i2t_r1"), rows[0] if rows else None)
    if headline and headline[1] is not None:
        ratio = f"{headline[3]:.0%} of the teacher ({fmt(headline[2])})" if headline[3] is not None else ""
        cards.append(_card(f"student {headline[0]}", fmt(headline[1]), ratio))
    if cards:
        body.append('<div class="cards">' + "".join(cards) + "</div>")
    if dig(report, "skipped", "summary"):
        body.append(f'<div class="warn">Data: {_e(report["skipped"]["summary"])}</div>')

    # charts
    arm_names = [str(a.get("arm")) for a in report.get("arms") or []]
    if not arm_names:
        arm_names = list(dict.fromkeys(str(e.get("arm")) for e in eps))
    if eps:
        body.append(_section("Arm timeline: the module distilled in each episode", _chart(charts.arm_timeline(arm_names, eps))))
        body.append(_section("Reward per pull (dots) and the policy's posterior mean ± std (band), per arm", _chart(charts.rewards(arm_names, eps))))
    if eps or report.get("initial_probe"):
        body.append(_section("Held-out probe loss and its terms (dashed: training loss of the episode)", _chart(charts.probe_losses(report.get("initial_probe") or {}, eps))))
    if any(isinstance(e.get("flops_total"), (int, float)) for e in eps):
        body.append(_section("Probe loss against training compute, and the time of each episode",
                             _chart(charts.probe_vs_compute(report.get("initial_probe") or {}, eps)),
                             _chart(charts.episode_seconds(eps)), _compute_note(report)))
    if report.get("arms"):
        arm_rows = [[a.get("arm"), fmt(a.get("pulls")), fmt(a.get("mean_reward"))] for a in report["arms"]]
        body.append(_section("Pull counts per arm", _chart(charts.pull_counts(report["arms"])),
                             _table(["arm", "pulls", "mean reward"], arm_rows)))

    # tables
    tables = []
    sizes = _size_rows(report)
    if sizes:
        desc = dig(report, "student", "description")
        tables.append(_section("Sizes", _table(["", "parameters", "file"], [list(r) for r in sizes]),
                               f'<p class="meta">{_e(desc)}</p>' if desc else None))
    if rows:
        tables.append(_section(_eval_title(report), _table(
            ["metric", "student", "teacher", "student / teacher"],
            [[k, fmt(s), fmt(t), "-" if r is None else f"{r:.0%}"] for k, s, t, r in rows])))
    t = report.get("timings") or {}
    if t:
        tables.append(_section("Timings", _table(["", "value"], [[k, fmt(v)] for k, v in t.items()])))
    initial, final = report.get("initial_probe") or {}, report.get("final_probe") or {}
    if initial or final:
        tables.append(_section("Probe loss terms", _table(
            ["term", "start", "end"], [[k, fmt(initial.get(k)), fmt(final.get(k))] for k in dict.fromkeys([*initial, *final])])))
    for i in range(0, len(tables), 2):
        body.append('<div class="grid2">' + "\n".join(tables[i:i + 2]) + "</div>" if i + 1 < len(tables) else tables[i])
    if eps:
        ep_rows = [[e.get("episode", "-"), e.get("arm", "-"), fmt(e.get("reward")), fmt(e.get("probe_loss")),
                    fmt(dig(e, "train", "total")), fmt(e.get("lr"), 3), fmt(e.get("step")), human_flops(e.get("flops")),
                    fmt(e.get("compute_s"), 3), fmt(e.get("wall_s"), 3)] for e in eps]
        body.append(_section("Episodes", '<div class="scroll">' + _table(
            ["episode", "arm", "reward", "probe loss", "train loss", "lr", "step", "compute", "compute s", "wall s"],
            ep_rows, left=(1,)) + "</div>"))
    cfg = report.get("config")
    if cfg:
        body.append('<section><details><summary>Resolved config and environment</summary>'
                    f'<pre>{_e(json.dumps({"config": cfg, "environment": report.get("environment")}, indent=1, default=str))}</pre>'
                    "</details></section>")
    return _page(f"distillctl report: {title}", body)


def _compute_note(report: dict[str, Any]) -> str | None:
    c = report.get("compute") or {}
    if not c:
        return None
    per_arm = ", ".join(f"{a} {human_flops(f)}" for a, f in (c.get("step_flops") or {}).items())
    budget = (f"budget {human_flops(c.get('budget_flops'))} of training compute" if c.get("budget") == "flops"
              else "budget in steps")
    return (f'<p class="meta">FLOPs per step ({_e(c.get("forward", "full"))} forward): {_e(per_arm)}; all modules, full '
            f'forward: {_e(human_flops(c.get("full_step_flops")))}. Spent {_e(human_flops(c.get("spent_flops")))} '
            f'({_e(budget)}); probe evaluations {_e(human_flops(c.get("probe_flops_total")))} more. Counted by '
            "torch.utils.flop_counter (matrix products, convolutions, attention; forward and backward).</p>")


def _pm(pair: Any, digits: int = 4) -> str:
    if not isinstance(pair, (list, tuple)) or not pair or not isinstance(pair[0], (int, float)):
        return "-"
    s = pair[1] if len(pair) > 1 and isinstance(pair[1], (int, float)) else None
    return f"{pair[0]:.{digits}g}" + (f" ± {s:.2g}" if s is not None else "")


def _flops_pm(pair: Any) -> str:
    if not isinstance(pair, (list, tuple)) or not pair or not isinstance(pair[0], (int, float)):
        return "-"
    return human_flops(pair[0]) + (f" ± {human_flops(pair[1])}" if len(pair) > 1 and pair[1] else "")


def render_compare_html(summary: dict[str, Any]) -> str:
    """``compare.html``: policies x seeds side by side, from ``distillctl compare``'s summary dict.

    Rows may carry ``curves`` (one list of probe losses per seed); they are drawn when present.
    """
    from distillctl import charts

    rows = summary.get("rows") or []
    target = summary.get("target_probe_loss")
    body = ["<h1>distillctl compare</h1>",
            f'<div class="meta">{len(rows)} runs · target probe loss {_e(fmt(target))} · '
            "mean ± std over seeds</div>"]
    body += _error_box(summary)
    if rows:
        body.append(_section("Probe loss", _chart(charts.compare_bars(rows, target)),
                             _chart(charts.compare_curves(rows, target)),
                             _chart(charts.compare_curves(rows, target, x="flops"))))
        body.append(_section("Evaluation", _chart(charts.compare_metrics(rows))))
        body.append(_section("Pulls", _chart(charts.compare_pulls(rows))))
        metrics = sorted({k for r in rows for k in (r.get("eval") or {})})
        head = ["run", "policy", "seeds", "final probe loss", f"steps to {fmt(target)}", f"compute to {fmt(target)}",
                "reached", "training compute", *metrics, "pulls"]
        table_rows = [[r.get("label", "-"), r.get("policy", "-"), r.get("seeds", "-"), _pm(r.get("final_probe")),
                       _pm(r.get("steps_to_target")), _flops_pm(r.get("compute_to_target")), r.get("reached", "-"),
                       _flops_pm(r.get("flops")),
                       *(_pm((r.get("eval") or {}).get(k), 3) for k in metrics),
                       ", ".join(f"{a}:{n}" for a, n in (r.get("pulls") or {}).items())] for r in rows]
        body.append(_section("Table", _table(head, table_rows, left=(0, 1, len(head) - 1))))
    return _page("distillctl compare", body)


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flat_columns(rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> list[tuple[str, tuple[Any, ...]]]:
    """(header, key path) for every table column of ``rows``: scalars as they are, dicts of numbers
    flattened to ``key[sub]`` (except ``pulls``, kept as one text cell); other values left out."""
    columns: list[tuple[str, tuple[Any, ...]]] = []
    seen: set[str] = set()
    for r in rows:
        for k, v in r.items():
            if k in skip:
                continue
            if isinstance(v, dict) and v and k != "pulls" and all(_numeric(x) for x in v.values()):
                found = [(f"{k}[{sub}]", (k, sub)) for sub in v]
            elif (k == "pulls" and isinstance(v, dict)) or _numeric(v) or isinstance(v, str) or v is None:
                found = [(k, (k,))]
            else:
                continue
            for head, path in found:
                if head not in seen:
                    seen.add(head)
                    columns.append((head, path))
    return columns


def _cell(r: dict[str, Any], path: tuple[Any, ...]) -> str:
    v = dig(r, *path)
    if isinstance(v, dict):
        return ", ".join(f"{a}:{fmt(n)}" for a, n in v.items())
    return fmt(v)


def render_simulate_html(doc: dict[str, Any]) -> str:
    """``simulate.html``: the policies' regret on a synthetic bandit, from ``distillctl simulate``'s document.

    Rows are rendered generically: every numeric column (and every dict of numbers, flattened to
    ``key[sub]``) goes into the table; the first column whose name contains "regret" gets a chart
    (bars with ``*_std`` error bars when it is a number, one line per policy when it is a dict).
    """
    from distillctl import charts

    rows = doc.get("rows") or []
    meta = [f"{k} {fmt(doc[k])}" for k in ("seeds", "episodes", "noise") if doc.get(k) is not None]
    meta += [f"{k} {fmt(v)}" for k, v in doc.items()
             if k not in ("seeds", "episodes", "noise", "rows", "schedule", "error") and (_numeric(v) or isinstance(v, str))]
    meta += [f"{k} {', '.join(str(x) for x in v[:6])}{f' … ({len(v)} in all)' if len(v) > 6 else ''}" for k, v in doc.items()
             if isinstance(v, list) and v and all(isinstance(x, (str, int)) for x in v) and k != "schedule"]
    body = ["<h1>distillctl simulate</h1>", f'<div class="meta">{_e(" · ".join(meta))}</div>']
    body += _error_box(doc)
    labels = [str(r.get("policy", r.get("label", i))) for i, r in enumerate(rows)]


    # charts: the first regret-like column (lower is better), the first best-arm-like column (higher is better)
    def column_chart(word: str, better: str) -> str | None:
        key = next((k for r in rows for k in r if word in k.lower() and not k.lower().endswith("_std")
                    and (_numeric(r[k]) or isinstance(r[k], dict))), None)
        if key is None:
            return None
        vals = [r.get(key) for r in rows]
        if any(isinstance(v, dict) for v in vals):
            return charts.grouped_bars(labels, [v if isinstance(v, dict) else {} for v in vals],
                                       f"{key} per policy and horizon ({better} is better)", "horizon", key)
        base = key[:-5] if key.endswith("_mean") else key
        stds = [r.get(f"{base}_std") for r in rows]
        return charts.bars_with_std(labels, [v if _numeric(v) else float("nan") for v in vals],
                                    stds if any(_numeric(x) for x in stds) else None,
                                    f"{key} per policy ({better} is better)", key)

    chart, best_chart = column_chart("regret", "lower"), column_chart("best", "higher")
    if chart or best_chart:
        body.append(_section("Policies", _chart(chart), _chart(best_chart)))
    sched = charts.schedule(doc.get("schedule") or [], doc.get("episodes") or 0) if doc.get("schedule") else None
    if sched:
        body.append(_section("Bandit", _chart(sched)))

    if rows:
        columns = _flat_columns(rows, skip=("policy", "label"))
        head = ["policy", *(h for h, _ in columns)]
        table_rows = [[label, *(_cell(r, p) for _, p in columns)] for label, r in zip(labels, rows, strict=False)]
        left = tuple(i + 1 for i, (h, _) in enumerate(columns) if h == "pulls")
        body.append(_section("Table", _table(head, table_rows, left=(0, *left))))
    for key, value in doc.items():  # any other list of records, e.g. the suite's per_scenario cells
        if key != "rows" and isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            columns = _flat_columns(value)
            table = _table([h for h, _ in columns], [[_cell(r, p) for _, p in columns] for r in value])
            body.append(_section(key.replace("_", " "), f'<div class="scroll">{table}</div>'))
    return _page("distillctl simulate", body)


# -------------------------------------------------------------------------------------------- writing


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_views(report: dict[str, Any], out_dir: Path, *, md: bool = True, html: bool = True) -> list[Path]:
    """(Re-)write ``report.md`` and/or ``report.html`` from ``report``; return the paths written."""
    written = []
    if md:
        _write_atomic(out_dir / "report.md", markdown(report))
        written.append(out_dir / "report.md")
    if html:
        _write_atomic(out_dir / "report.html", render_run_html(report))
        written.append(out_dir / "report.html")
    return written


def write_reports(report: dict[str, Any], out_dir: Path) -> None:
    """Write ``report.json`` (the truth) then its views ``report.md`` and ``report.html``, each atomically."""
    _write_atomic(out_dir / "report.json", json.dumps(report, indent=1, default=str))
    write_views(report, out_dir)


def load_report(run: Path) -> dict[str, Any]:
    """The ``report.json`` of a run directory (or the file itself); a clear :class:`DistillctlError` otherwise."""
    from distillctl.errors import DistillctlError

    path = run / "report.json" if run.is_dir() else run
    if not run.exists():
        raise DistillctlError(f"no such run: {run}; pass the --out folder of a distill run.")
    if not path.is_file():
        raise DistillctlError(f"{run} holds no report.json; pass the --out folder of a distill run.")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DistillctlError(f"{path} is not readable JSON ({' '.join(str(exc).split())}).") from None
    if not isinstance(doc, dict):
        raise DistillctlError(f"{path} is not a distillctl report (expected a JSON object, got {type(doc).__name__}).")
    return doc
