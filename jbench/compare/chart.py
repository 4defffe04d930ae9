"""The comparison chart (PNG): each run's score per task with its CI, and each variant's paired Δ with its CI.

It exists apart from :mod:`jbench.compare.render` (tables, markdown, HTML) because the layout rules are its own:
every label stays inside the axes it belongs to (clipped, never rotated across the frame), the metric, n and chance
line of each task are written under it, and the figure stays readable from 1 to 8+ variants (wider, thinner bars;
per-bar numbers only while there is room for them). Draw it inside :func:`jbench.jafont.plot_fonts`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from jbench import stats
from jbench.compare.model import AVERAGES, ComparisonData, TaskComparison

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["comparison_figure"]

#: one colour per variant (the original is grey); repeats after 10 variants
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f",
           "#aec7e8"]
ORIGINAL_COLOR = "#555555"
WORSE_COLOR = "#d62728"
#: per-bar numbers are written while a group has at most this many bars (beyond, they would overlap)
MAX_BARS_WITH_VALUES = 4


def _tick_label(group: str, row: TaskComparison | None) -> str:
    """Task name (family / version on two lines), then its metric and n, then its chance line."""
    if group in AVERAGES:
        head = group.replace(" average", "\naverage")
        return head + (f"\nmean points\nn={row.n}" if row is not None else "")
    fam, _, rest = group.partition("-")
    lines = [fam] + ([rest] if rest else [])
    if row is not None:
        lines.append(f"{row.metric}, n={row.n}")
        if row.chance_label:
            lines.append(row.chance_label)
    return "\n".join(lines)


def _title(data: ComparisonData) -> str:
    o = data.original
    names = ", ".join(v.label for v in data.variants)
    who = names if len(names) <= 60 else f"{len(data.variants)} variants"
    return f"{data.model}: original ({o.label}, {o.dtype}) vs {who}"


def comparison_figure(data: ComparisonData) -> Figure:
    """The chart of a comparison (a Figure on an Agg canvas: no pyplot state, safe in threads and servers)."""
    from matplotlib.artist import Artist
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups = data.tasks + [name for name in AVERAGES if any(r.task == name for r in data.rows)]
    labels = [data.original.label] + [v.label for v in data.variants]
    nbars = len(labels)
    width = 0.84 / nbars
    xs = np.arange(len(groups), dtype=float)
    xs[len(data.tasks):] += 0.4  # set the averages apart
    fig_w = min(18.0, max(9.0, 2.2 + len(groups) * (0.5 + 0.2 * nbars)))
    fig = Figure(figsize=(fig_w, 8.8))
    FigureCanvasAgg(fig)
    ax, dax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2], "hspace": 0.1})
    colors = [ORIGINAL_COLOR] + [PALETTE[i % len(PALETTE)] for i in range(len(data.variants))]
    values = nbars <= MAX_BARS_WITH_VALUES

    def first_row(task: str) -> TaskComparison | None:
        return next((r for r in data.rows if r.task == task), None)

    top = max([r.value_ci[1] for r in data.rows] + [r.original_ci[1] for r in data.rows] + [10.0])
    ymax = min(112.0, top + (12 if values else 6))
    chance_drawn = False
    for gi, task in enumerate(groups):
        ref = first_row(task)
        if ref is not None and ref.chance is not None and ref.chance > 0:
            ax.hlines(ref.chance, xs[gi] - 0.46, xs[gi] + 0.46, colors="#222222", linestyles=(0, (3, 2)),
                      lw=1.3, zorder=5)
            chance_drawn = True
    for bi, label in enumerate(labels):
        off = (bi - (nbars - 1) / 2) * width
        for gi, task in enumerate(groups):
            if bi == 0:
                r = first_row(task)
                if r is None:
                    continue
                val, (lo, hi), is_coll = r.original, r.original_ci, r.original_collapsed
            else:
                try:
                    r = data.row(task, label)
                except KeyError:
                    continue
                val, (lo, hi), is_coll = r.value, r.value_ci, r.collapsed
            x = xs[gi] + off
            ax.bar(x, val, width * 0.9, color=colors[bi], edgecolor=WORSE_COLOR if is_coll else "white",
                   hatch="xx" if is_coll else None, lw=1.4 if is_coll else 0.4, zorder=2)
            ax.errorbar(x, val, yerr=[[max(0.0, val - lo)], [max(0.0, hi - val)]], fmt="none", ecolor="black",
                        elinewidth=0.9, capsize=min(2.0, 40 * width), zorder=3)
            if is_coll and val < 0.02 * ymax:  # a collapsed bar of (almost) no height: mark where it would be
                ax.plot(x, 0.02 * ymax, marker="x", color=WORSE_COLOR, ms=5, mew=1.5, zorder=4, clip_on=True)
            if values:
                ax.text(x, min(max(hi, val) + 0.8, ymax - 1), f"{val:.1f}", ha="center", va="bottom",
                        fontsize=7 if nbars <= 3 else 6, zorder=4, clip_on=True)
            if bi > 0:
                worse = r.verdict == stats.WORSE
                dax.errorbar(x, r.delta, yerr=[[max(0.0, r.delta - r.ci_low)], [max(0.0, r.ci_high - r.delta)]],
                             fmt="o", mfc=colors[bi] if r.significant else "white",
                             mec=WORSE_COLOR if worse else colors[bi], mew=2.0 if worse else 1.0,
                             ecolor=colors[bi], capsize=min(3.0, 60 * width), ms=5 if nbars <= 5 else 4, zorder=3)
                if values:
                    dax.annotate(f"{r.delta:+.1f}", (x, r.ci_high), xytext=(0, 4), textcoords="offset points",
                                 ha="center", va="bottom", fontsize=7, annotation_clip=True,
                                 color=WORSE_COLOR if worse else "#222222",
                                 fontweight="bold" if worse else "normal")
    ax.set_ylabel("score (points)")
    ax.set_ylim(0, ymax)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    ax.set_title("score per task (acc × 100, or exact match 0-100; metric and n under each task); "
                 f"error bars: {100 * (1 - data.alpha):g}% bootstrap CI of each run's mean", fontsize=9, loc="left")
    if len(data.tasks) < len(groups):
        for a in (ax, dax):
            a.axvline((xs[len(data.tasks) - 1] + xs[len(data.tasks)]) / 2, color="#bbbbbb", lw=1)
    handles: list[Artist] = [Patch(facecolor=colors[i], label=("original: " if i == 0 else "") + lab)
                             for i, lab in enumerate(labels)]
    if chance_drawn:
        handles.append(Line2D([], [], color="#222222", ls=(0, (3, 2)),
                              label="chance 1/k, or the majority-class\nrate if the labels are imbalanced"))
    if any(r.collapsed or r.original_collapsed for r in data.rows):
        handles.append(Patch(facecolor="white", edgecolor=WORSE_COLOR, hatch="xx", label="collapsed"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)

    m = data.margin
    band = dax.axhspan(-m, m, color="#2ca02c", alpha=0.12, zorder=0)
    dax.axhline(0, color="black", lw=0.8)
    lows = [r.ci_low for r in data.rows if math.isfinite(r.ci_low)]
    highs = [r.ci_high for r in data.rows if math.isfinite(r.ci_high)]
    span = max([m * 1.5] + [abs(v) for v in lows + highs])
    dax.set_ylim(-span * 1.15, span * (1.35 if values else 1.15))
    dax.set_ylabel("Δ vs original (points)")
    dax.set_title(f"paired difference Δ (variant − original) with its {100 * (1 - data.alpha):g}% CI",
                  fontsize=9, loc="left")
    dax.grid(axis="y", alpha=0.3, zorder=0)
    dax.legend(handles=[band, Line2D([], [], marker="o", ls="", color="#555555"),
                        Line2D([], [], marker="o", ls="", mfc="white", color="#555555"),
                        Line2D([], [], marker="o", ls="", mfc="white", mec=WORSE_COLOR, mew=2.0)],
               labels=[f"±{m:g} pt equivalence margin", "CI excludes 0 (a real change)", "CI includes 0",
                       f"TOST 'worse' (loss beyond {m:g} pt)"],
               loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    dax.set_xticks(xs)
    dax.set_xticklabels([_tick_label(g, first_row(g)) for g in groups], fontsize=8)
    dax.set_xlim(xs[0] - 0.55, xs[-1] + 0.55)
    # not bold: the Japanese font has no bold face (matplotlib would log a warning and use the regular one anyway)
    fig.suptitle(_title(data), fontsize=13, x=0.02, ha="left", y=0.955)
    fig.subplots_adjust(top=0.9, left=0.06 if fig_w > 12 else 0.08)
    return fig
