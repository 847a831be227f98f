"""Charts for the HTML reports: matplotlib figures rendered to self-contained inline SVG.

Every function takes plain data (lists and dicts out of ``report.json``, ``compare.json`` or the
``simulate`` document) and returns an ``<svg>...</svg>`` string ready to paste into HTML: no XML
declaration, no DOCTYPE, no comments, no metadata block, element ids prefixed so that several
charts can share one page. Text stays text (``svg.fonttype = "none"``), so nothing is fetched.

matplotlib is imported inside :func:`_plt` only: ``distillctl --help`` never pays for it.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Sequence
from typing import Any

# Colours (matplotlib's tab10), given to arms by position so an arm keeps its colour in every chart.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WIDTH = 11.0  # inches; at 72 px/in about 800 px, scaled to the page width by CSS


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none",  # text as <text>: small, selectable, no embedded font files
        "svg.hashsalt": "distillctl",  # deterministic clip-path ids
        "font.family": "sans-serif",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "axes.axisbelow": True,  # grid lines behind bars
        "grid.color": "#e5e5e5",
        "grid.linewidth": 0.6,
        "axes.edgecolor": "#888888",
        "axes.titlesize": 10,
        "axes.titleweight": "bold",
        "axes.titlelocation": "left",
        "legend.frameon": False,
        "legend.fontsize": 8,
    })
    return plt


def to_svg(fig: Any) -> str:
    """Render ``fig`` to a clean inline ``<svg>`` string and close it."""
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop <?xml ...?> and the DOCTYPE that names w3.org
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF block with dublincore URLs
    # Unique ids per chart: several SVGs on one page must not resolve each other's #refs.
    prefix = "c" + hashlib.sha1(text.encode()).hexdigest()[:8] + "-"  # deterministic: same chart, same ids
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', text)
    # Let CSS size the chart to its container; the viewBox keeps the aspect ratio.
    text = re.sub(r'(<svg[^>]*?)\swidth="[^"]*"\sheight="[^"]*"', r"\1", text, count=1)
    return text.strip()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer_x(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _log_if_wide(ax: Any, values: Sequence[float]) -> None:
    vals = [v for v in values if _finite(v) and v > 0]
    if vals and max(vals) / min(vals) > 30:
        ax.set_yscale("log")


# ---------------------------------------------------------------------------------------- run charts


def arm_timeline(arms: list[str], episodes: list[dict[str, Any]]) -> str:
    """One row per arm, a bar at each episode that pulled it (coloured by the arm)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 0.9 + 0.32 * max(len(arms), 1)))
    row = {a: i for i, a in enumerate(arms)}
    for e in episodes:
        a = e.get("arm")
        if a not in row:
            row[a] = len(row)
        ax.broken_barh([(e.get("episode", 0) - 0.45, 0.9)], (row[a] - 0.38, 0.76), color=colour(row[a]))
    names = list(row)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(0.4, max([e.get("episode", 0) for e in episodes] + [1]) + 0.6)
    ax.set_xlabel("episode")
    ax.grid(axis="y", visible=False)
    _integer_x(ax)
    return to_svg(fig)


def rewards(arms: list[str], episodes: list[dict[str, Any]]) -> str:
    """Small multiples, one panel per arm: reward of each pull (dots), posterior mean ± std (line, band)."""
    plt = _plt()
    n = max(len(arms), 1)
    cols = 1 if n <= 4 else 2 if n <= 12 else 3
    rows = math.ceil(n / cols)
    fig, grid = plt.subplots(rows, cols, sharex=True, sharey=True, squeeze=False,
                             figsize=(WIDTH, 1.45 * rows + 0.7))
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:  # an odd number of arms leaves empty panels
        ax.set_visible(False)
    xs = [e.get("episode", i + 1) for i, e in enumerate(episodes)]
    for i, arm in enumerate(arms):
        ax, c = axes[i], colour(i)
        post = [(x, (e.get("posterior") or [])[i]) for x, e in zip(xs, episodes, strict=False)
                if i < len(e.get("posterior") or []) and isinstance(e["posterior"][i], dict)]
        post = [(x, p.get("mean"), p.get("std") or 0.0) for x, p in post if _finite(p.get("mean"))]
        if post:
            px, pm, ps = zip(*post, strict=True)
            ax.plot(px, pm, color=c, lw=1.4)
            ax.fill_between(px, [m - s for m, s in zip(pm, ps, strict=True)], [m + s for m, s in zip(pm, ps, strict=True)],
                            color=c, alpha=0.15, lw=0)
        pulled = [(x, e.get("reward")) for x, e in zip(xs, episodes, strict=False)
                  if e.get("arm") == arm and _finite(e.get("reward"))]
        if pulled:
            ax.scatter(*zip(*pulled, strict=True), s=18, color=c, edgecolor="white", linewidth=0.5, zorder=3)
        ax.text(0.005, 0.96, f"{arm} ({len(pulled)} pulls)", transform=ax.transAxes, va="top", fontsize=9,
                fontweight="bold", color=c)
        ax.axhline(0, color="#999999", lw=0.6)
    for ax in axes[max(0, n - cols):n]:  # the bottom panel of each column
        ax.set_xlabel("episode")
        ax.xaxis.set_tick_params(labelbottom=True)
        _integer_x(ax)
    fig.supylabel("relative probe-loss decrement", fontsize=8)
    fig.tight_layout()
    return to_svg(fig)


def _loss_lines(ax: Any, eps: list[tuple[int, dict[str, Any]]], keys: list[str], strip: str = "") -> list[float]:
    plotted: list[float] = []
    for j, k in enumerate(keys):
        pts = [(x, p[k]) for x, p in eps if _finite(p.get(k))]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o" if len(pts) < 40 else None, ms=3,
                    lw=2.0 if k == "total" else 1.2, color="#222222" if k == "total" else colour(j),
                    label=k[len(strip):] if strip and k.startswith(strip) else k)
            plotted += [v for _, v in pts]
    return plotted


def probe_losses(initial: dict[str, Any], episodes: list[dict[str, Any]]) -> str:
    """Held-out probe loss per episode: total and its terms (training total dashed) on top; below, the
    sub-terms (``task/...``, ``kd/...``) and the layerwise term per module (``lw/...``) when present."""
    plt = _plt()
    eps = [(0, initial or {})] + [(e.get("episode", i + 1), e.get("probe") or {}) for i, e in enumerate(episodes)]
    keys = list(dict.fromkeys(k for _, p in eps for k in p))
    main = [k for k in keys if "/" not in k]
    per_module = [k for k in keys if k.startswith("lw/")]
    sub_terms = [k for k in keys if "/" in k and not k.startswith("lw/")]
    lower = [panel for panel in (sub_terms, per_module) if panel]
    if lower:
        fig = plt.figure(figsize=(WIDTH, 6.4))
        top = fig.add_subplot(2, 1, 1)
        bottoms = [fig.add_subplot(2, len(lower), len(lower) + i + 1) for i in range(len(lower))]
    else:
        fig, top = plt.subplots(figsize=(WIDTH, 3.4))
        bottoms = []
    plotted = _loss_lines(top, eps, main)
    train = [(e.get("episode", i + 1), (e.get("train") or {}).get("total")) for i, e in enumerate(episodes)]
    train = [(x, v) for x, v in train if _finite(v)]
    if train:
        top.plot(*zip(*train, strict=True), ls="--", lw=1, color="#777777", label="train total")
        plotted += [v for _, v in train]
    _log_if_wide(top, plotted)
    top.set_xlabel("episode (0 = before training)")
    top.set_title("Probe loss and its terms")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax, panel in zip(bottoms, lower, strict=True):
        is_lw = panel is per_module
        _log_if_wide(ax, _loss_lines(ax, eps, panel, strip="lw/" if is_lw else ""))
        ax.set_title("Layerwise term per module" if is_lw else "Task and KD sub-terms")
        ax.set_xlabel("episode")
        ax.legend(loc="best", fontsize=7)
    for ax in [top, *bottoms]:
        _integer_x(ax)
    fig.tight_layout()
    return to_svg(fig)


def probe_vs_compute(initial: dict[str, Any], episodes: list[dict[str, Any]]) -> str:
    """Held-out probe loss (total) against the training FLOPs spent, one point per episode, coloured by arm."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    pts = [(0.0, (initial or {}).get("total"))] + [(e.get("flops_total"), (e.get("probe") or {}).get("total")) for e in episodes]
    pts = [(x, y) for x, y in pts if _finite(x) and _finite(y)]
    if pts:
        ax.plot([x for x, _ in pts], [y for _, y in pts], color="#222222", lw=1.5)
        arms = list(dict.fromkeys(str(e.get("arm")) for e in episodes))
        for j, arm in enumerate(arms):
            sel = [(e.get("flops_total"), (e.get("probe") or {}).get("total")) for e in episodes if str(e.get("arm")) == arm]
            sel = [(x, y) for x, y in sel if _finite(x) and _finite(y)]
            if sel:
                ax.scatter([x for x, _ in sel], [y for _, y in sel], s=16, color=colour(j), label=arm, zorder=3)
        _log_if_wide(ax, [y for _, y in pts])
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("training FLOPs spent")
    ax.set_ylabel("probe loss")
    ax.set_title("Probe loss against training compute (dots: episode ends, by arm)")
    fig.tight_layout()
    return to_svg(fig)


def episode_seconds(episodes: list[dict[str, Any]]) -> str:
    """Seconds per episode: compute (the training steps) stacked under the rest (data, probe, bookkeeping)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 2.6))
    xs = [e.get("episode", i + 1) for i, e in enumerate(episodes)]
    comp = [float(e.get("compute_s") or 0.0) for e in episodes]
    rest = [max(0.0, float(e.get("wall_s") or 0.0) - c) for e, c in zip(episodes, comp, strict=True)]
    ax.bar(xs, comp, color=colour(0), label="compute (training steps)")
    ax.bar(xs, rest, bottom=comp, color="#bbbbbb", label="probe, data, bookkeeping")
    ax.set_xlabel("episode")
    ax.set_ylabel("seconds")
    ax.set_title("Wall time per episode")
    ax.legend(loc="upper right", fontsize=8)
    _integer_x(ax)
    fig.tight_layout()
    return to_svg(fig)


def pull_counts(arms: list[dict[str, Any]]) -> str:
    """Horizontal bars: pulls per arm, labelled with the arm's mean reward."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 0.8 + 0.34 * max(len(arms), 1)))
    names = [str(a.get("arm")) for a in arms]
    pulls = [a.get("pulls") or 0 for a in arms]
    ax.barh(range(len(names)), pulls, color=[colour(i) for i in range(len(names))], height=0.7)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    for i, a in enumerate(arms):
        mr = a.get("mean_reward")
        note = f"{pulls[i]}" + (f"  (mean reward {mr:.3g})" if _finite(mr) else "")
        ax.text(pulls[i], i, "  " + note, va="center", fontsize=8)
    ax.set_xlim(0, max(pulls + [1]) * 1.35)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("pulls")
    _integer_x(ax)
    return to_svg(fig)


# ------------------------------------------------------------------------------------ compare charts


def _err_bars(ax: Any, labels: list[str], pairs: list[Any], title: str, xlabel: str) -> None:
    means = [p[0] if p and _finite(p[0]) else 0.0 for p in pairs]
    stds = [p[1] if p and len(p) > 1 and _finite(p[1]) else 0.0 for p in pairs]
    missing = [not (p and _finite(p[0])) for p in pairs]
    ax.barh(range(len(labels)), means, xerr=stds, height=0.6, capsize=3,
            color=[colour(i) for i in range(len(labels))], error_kw={"elinewidth": 1, "ecolor": "#333333"})
    for i, m in enumerate(missing):
        if m:
            ax.text(0, i, "  not reached", va="center", fontsize=8, color="#777777")
    ax.set_yticks(range(len(labels)), labels)
    if not ax.yaxis_inverted():  # shared y axes: invert once, first label on top
        ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def compare_bars(rows: list[dict[str, Any]], target: float | None) -> str:
    """Final probe loss and steps to the target, mean ± std per run label."""
    plt = _plt()
    labels = [str(r.get("label", r.get("policy", "?"))) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 0.9 + 0.42 * max(len(rows), 1)), sharey=True)
    _err_bars(axes[0], labels, [r.get("final_probe") for r in rows], "Final probe loss (mean ± std)", "probe loss")
    tgt = f" {target:.4g}" if _finite(target) else ""
    _err_bars(axes[1], labels, [r.get("steps_to_target") for r in rows], f"Steps to probe loss{tgt}", "steps")
    fig.tight_layout()
    return to_svg(fig)


def compare_metrics(rows: list[dict[str, Any]]) -> str | None:
    """Grouped bars: each eval metric that is a rate in [0, 1] (R@K, accuracy: one scale), mean ± std per
    run label; counts and timings stay in the table. None when no row has such a metric."""
    def rate(k: str) -> bool:
        vals = [(r.get("eval") or {}).get(k, [None])[0] for r in rows]
        vals = [v for v in vals if _finite(v)]
        return bool(vals) and all(0.0 <= v <= 1.0 for v in vals)

    metrics = sorted(k for k in {k for r in rows for k in (r.get("eval") or {})} if rate(k))
    if not metrics:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        ev = r.get("eval") or {}
        ms = [(ev.get(k) or [None])[0] for k in metrics]
        ss = [(list(ev.get(k) or []) + [0, 0])[1] for k in metrics]
        ax.bar([j + i * width - 0.4 + width / 2 for j in range(len(metrics))],
               [m if _finite(m) else 0 for m in ms], width * 0.92,
               yerr=[s if _finite(s) else 0 for s in ss], capsize=2, color=colour(i),
               label=str(r.get("label", "?")), error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)  # headroom for the legend
    ax.grid(axis="x", visible=False)
    ax.set_title("Student evaluation (mean ± std over seeds)")
    ax.legend(ncol=min(len(rows), 4), loc="upper right")
    return to_svg(fig)


def compare_pulls(rows: list[dict[str, Any]]) -> str | None:
    """Stacked bars: share of pulls per arm, one bar per run label."""
    arms = list(dict.fromkeys(a for r in rows for a in (r.get("pulls") or {})))
    if not arms:
        return None
    plt = _plt()
    labels = [str(r.get("label", "?")) for r in rows]
    fig, ax = plt.subplots(figsize=(WIDTH, 0.9 + 0.42 * max(len(rows), 1)))
    left = [0.0] * len(rows)
    for j, a in enumerate(arms):
        share = []
        for r in rows:
            p = r.get("pulls") or {}
            total = sum(v for v in p.values() if _finite(v)) or 1
            share.append((p.get(a) or 0) / total)
        ax.barh(range(len(rows)), share, left=left, height=0.6, color=colour(j), label=a)
        left = [x + s for x, s in zip(left, share, strict=False)]
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.grid(axis="y", visible=False)
    ax.set_title("Share of pulls per arm")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_svg(fig)


def compare_curves(rows: list[dict[str, Any]], target: float | None, x: str = "episode") -> str | None:
    """Probe loss per episode (``x="episode"``) or against the training FLOPs spent (``x="flops"``, from each
    row's ``curves_flops``): thin line per seed, thick line for the mean (interpolated onto a common grid)."""
    import numpy as np

    if not any(r.get("curves") for r in rows) or (x == "flops" and not any(r.get("curves_flops") for r in rows)):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6))
    plotted: list[float] = []
    for i, r in enumerate(rows):
        xs_all = r.get("curves_flops") if x == "flops" else [list(range(len(c))) for c in r.get("curves") or []]
        curves = [[(a, v) for a, v in zip(xs, c, strict=False) if _finite(v) and _finite(a)]
                  for xs, c in zip(xs_all or [], r.get("curves") or [], strict=False) if c]
        curves = [c for c in curves if c]
        for c in curves:
            ax.plot([a for a, _ in c], [v for _, v in c], color=colour(i), lw=0.7, alpha=0.35)
            plotted += [v for _, v in c]
        if curves:
            end = min(c[-1][0] for c in curves)
            grid = sorted({a for c in curves for a, _ in c if a <= end})
            mean = np.mean([np.interp(grid, [a for a, _ in c], [v for _, v in c]) for c in curves], axis=0)
            ax.plot(grid, mean, color=colour(i), lw=2, label=str(r.get("label", "?")))
    if _finite(target):
        ax.axhline(target, color="#555555", ls=":", lw=1, label=f"target {target:.4g}")
    vals = [v for v in plotted if _finite(v) and v > 0]
    if vals and max(vals) / min(vals) > 3:  # the first drop dwarfs the differences that matter: log scale
        ax.set_yscale("log")
    ax.set_xlabel("training FLOPs spent" if x == "flops" else "episode")
    ax.set_ylabel("probe loss")
    ax.set_title(("Probe loss against training compute" if x == "flops" else "Probe loss per episode")
                 + " (thin: each seed, thick: mean)")
    ax.legend(loc="upper right")
    return to_svg(fig)


# ----------------------------------------------------------------------------------- simulate charts


def bars_with_std(labels: list[str], means: list[float], stds: list[float] | None, title: str, xlabel: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 0.9 + 0.4 * max(len(labels), 1)))
    ax.barh(range(len(labels)), [m if _finite(m) else 0 for m in means],
            xerr=[s if _finite(s) else 0 for s in stds] if stds else None, height=0.6, capsize=3,
            color=[colour(i) for i in range(len(labels))], error_kw={"elinewidth": 1, "ecolor": "#333333"})
    for i, m in enumerate(means):
        if _finite(m):
            s = stds[i] if stds and _finite(stds[i]) else 0.0
            ax.annotate(f"{m:.4g}", (m + s, i), xytext=(5, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, max([m + (stds[i] if stds and _finite(stds[i]) else 0) for i, m in enumerate(means) if _finite(m)]
                       + [1e-9]) * 1.15)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return to_svg(fig)


def lines_over(labels: list[str], series: list[dict[str, float]], title: str, xlabel: str, ylabel: str) -> str:
    """One line per label over the (sorted) keys of its dict, e.g. regret per horizon."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    keys = list(dict.fromkeys(k for s in series for k in s))
    try:
        keys.sort(key=float)
        xs: list[Any] = [float(k) for k in keys]
    except ValueError:
        xs = list(range(len(keys)))
        ax.set_xticks(xs, keys)
    for i, (label, s) in enumerate(zip(labels, series, strict=False)):
        pts = [(x, s[k]) for x, k in zip(xs, keys, strict=False) if _finite(s.get(k))]
        if pts:
            ax.plot(*zip(*pts, strict=False), marker="o", ms=3, color=colour(i), label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left")
    return to_svg(fig)


def schedule(schedule: list[Any], episodes: int) -> str | None:
    """The true mean reward of each arm over episodes (a step function from the switch points)."""
    pts = [(int(s[0]), [float(m) for m in s[1]]) for s in schedule or [] if len(s) == 2]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 2.6))
    pts.sort()
    n_arms = max(len(m) for _, m in pts)
    for a in range(n_arms):
        xs, ys = [], []
        for k, (start, means) in enumerate(pts):
            end = pts[k + 1][0] if k + 1 < len(pts) else episodes
            if a < len(means):
                xs += [start, end]
                ys += [means[a], means[a]]
        ax.plot(xs, ys, color=colour(a), lw=2, label=f"arm{a}")
    ax.set_xlabel("episode")
    ax.set_ylabel("mean reward")
    ax.set_title("The bandit: true mean reward of each arm")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_svg(fig)


def grouped_bars(labels: list[str], series: list[dict[str, float]], title: str, xlabel: str, ylabel: str) -> str:
    """Bars per key of the dicts (e.g. per horizon), one bar per label; one line per label past 6 keys."""
    keys = list(dict.fromkeys(str(k) for s in series for k in s))
    if len(keys) > 6:
        return lines_over(labels, [{str(k): v for k, v in s.items()} for s in series], title, xlabel, ylabel)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    width = 0.8 / max(len(labels), 1)
    for i, (label, s) in enumerate(zip(labels, series, strict=False)):
        vals = {str(k): v for k, v in s.items()}
        ys = [vals.get(k) for k in keys]
        ax.bar([j + i * width - 0.4 + width / 2 for j in range(len(keys))], [y if _finite(y) else 0 for y in ys],
               width * 0.92, color=colour(i), label=label)
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.05)
    ax.grid(axis="x", visible=False)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_svg(fig)
