"""Reports: ``report.json`` is the truth; ``report.md`` and the terminal tables are views of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in vals)


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def human_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def eval_rows(report: dict[str, Any]) -> list[tuple[str, float | None, float | None, float | None]]:
    """(metric, student, teacher, student/teacher) for every metric in the report's eval."""
    ev = report.get("eval") or {}
    student, teacher = ev.get("student", {}), ev.get("teacher", {})
    rows = []
    for k in student:
        s, t = student.get(k), teacher.get(k)
        rows.append((k, s, t, (s / t) if (s is not None and t) else None))
    return rows


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    sizes = report["sizes"]
    lines = [
        f"# distillctl report: {cfg['teacher']['name']} → {cfg['student']['name']} ({cfg['policy']['name']})",
        "",
        f"distillctl {report['distillctl_version']} · torch {report['environment']['torch']} · "
        f"device {report['environment']['device']} · {report['steps']} steps · {report['samples']:,} samples · "
        f"{report['timings']['total_s']:.1f}s total ({report['timings']['train_s']:.1f}s training)",
        "",
        "## Sizes",
        "",
        "| | parameters | file |",
        "|---|---|---|",
        f"| teacher | {human_params(sizes['teacher_params'])} | - |",
        f"| student | {human_params(sizes['student_params'])} | {sizes['student_file_bytes'] / 1e6:.2f} MB "
        f"({sizes['export_dtype']}) |",
        f"| compression | {sizes['compression']:.2f}× | |",
        "",
        "## Arms",
        "",
        "| arm | pulls | mean reward |",
        "|---|---|---|",
    ]
    for a in report["arms"]:
        lines.append(f"| {a['arm']} | {a['pulls']} | {fmt(a['mean_reward'])} |")
    eps = report["episodes"]
    lines += [
        "",
        "## Episodes",
        "",
        f"probe loss: `{sparkline([report['initial_probe'].get('total', float('nan'))] + [e['probe']['total'] for e in eps])}` "
        f"({fmt(report['initial_probe'].get('total'))} → {fmt(report['final_probe'].get('total'))})",
        "",
        "| episode | arm | reward | probe loss | train loss | lr |",
        "|---|---|---|---|---|---|",
    ]
    for e in eps:
        lines.append(
            f"| {e['episode']} | {e['arm']} | {fmt(e['reward'])} | {fmt(e['probe_loss'])} | "
            f"{fmt(e['train'].get('total'))} | {fmt(e['lr'], 3)} |"
        )
    rows = eval_rows(report)
    if rows:
        split = cfg["eval"]["split"]
        lines += ["", f"## Evaluation ({cfg['data']['name']} {split} split)", "",
                  "| metric | student | teacher | student / teacher |", "|---|---|---|---|"]
        for k, s, t, r in rows:
            lines.append(f"| {k} | {fmt(s)} | {fmt(t)} | {'-' if r is None else f'{r:.0%}'} |")
    if report["skipped"]["summary"]:
        lines += ["", f"Data: {report['skipped']['summary']}"]
    t = report["timings"]
    lines += [
        "",
        "## Timings",
        "",
        f"- training {t['train_s']:.1f}s: compute {t['compute_s']:.1f}s, data {t['data_s']:.1f}s, probe {t['probe_s']:.1f}s "
        f"(compute fraction {t['compute_fraction']:.2f}); {t['samples_per_s']:.1f} samples/s",
        "",
    ]
    return "\n".join(lines)


def write_reports(report: dict[str, Any], out_dir: Path) -> None:
    for name, text in (("report.json", json.dumps(report, indent=1, default=str)), ("report.md", markdown(report))):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out_dir / name)
