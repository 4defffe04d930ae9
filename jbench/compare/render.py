"""Rendering of a comparison: the markdown table, the self-contained HTML page and the PNG chart.

It exists apart from :mod:`jbench.compare.analysis` so that the statistics can be read, tested and reused without
any formatting in the way, and a new output format touches only this file. :class:`ComparisonReport` is the
report :func:`jbench.compare.compare_runs` returns: :class:`jbench.compare.model.ComparisonData` plus renderers.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import numpy as np

from jbench import stats
from jbench.compare.model import AVERAGES, ComparisonData, RunCard, TaskComparison

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ComparisonReport"]


class ComparisonReport(ComparisonData):
    """Everything :func:`jbench.compare.compare_runs` found, plus renderers (markdown, JSON, HTML, PNG)."""

    # ---- tables (shared by markdown and HTML) ------------------------------------------------------------

    def _card_table(self, card: RunCard) -> tuple[list[str], list[list[str]]]:
        o = self.original
        mine = self.rows_for(card.label)
        head = ["", f"original ({o.label})", card.label]
        body = [
            ["run", o.run, card.run],
            ["model", o.model, card.model],
            ["variant / dtype", f"{o.variant} / {o.dtype}", f"{card.variant} / {card.dtype}"],
            ["size on disk", _bytes(o.size_bytes), _with_ratio(_bytes(card.size_bytes), card.size_bytes,
                                                                  o.size_bytes, "pct")],
            ["peak memory", _mb(o.peak_rss_mb), _with_ratio(_mb(card.peak_rss_mb), card.peak_rss_mb,
                                                            o.peak_rss_mb, "pct")],
            ["load time", _secs(o.load_s), _with_ratio(_secs(card.load_s), card.load_s, o.load_s, "x")],
            ["throughput", _tps(o.tokens_per_s), _with_ratio(_tps(card.tokens_per_s), card.tokens_per_s,
                                                             o.tokens_per_s, "x")],
        ]
        for r in mine:
            if r.kind == "average":
                body.append([r.task, _pts(r.original),
                             f"{_pts(r.value)} (Δ {_signed(r.delta)} [{_signed(r.ci_low)}, {_signed(r.ci_high)}], "
                             f"{r.verdict})"])
        tasks = [r for r in mine if r.kind == "task"]
        counts = Counter(r.verdict for r in tasks)
        order = [stats.EQUIVALENT, stats.INCONCLUSIVE, stats.WORSE, stats.BETTER]
        body.append([f"TOST at ±{self.margin:g} pts", "", ", ".join(f"{counts[v]} {v}" for v in order if counts[v])
                     or "n/a"])
        worst = min(tasks, key=lambda r: r.delta, default=None)
        if worst is not None:
            body.append(["largest loss", "", f"{worst.task}: {_signed(worst.delta)} pts "
                                             f"[{_signed(worst.ci_low)}, {_signed(worst.ci_high)}]"])
        coll = [f"{r.task} ({r.collapse_reason})" for r in tasks if r.collapsed]
        body.append(["collapsed tasks", "", "; ".join(coll) if coll else "none"])
        return head, body

    def _comparison_table(self) -> tuple[list[str], list[list[str]]]:
        head = ["task", "variant", "metric", "n", "original", "variant score", "Δ pts",
                f"{100 * (1 - self.alpha):g}% CI", "CI method", "McNemar p", "r→w", "w→r", "agree", "mean KL",
                "top-1 agree", f"TOST ±{self.margin:g}", "collapsed"]
        body = []
        for r in self.rows:
            body.append([
                r.task, r.variant, r.metric, str(r.n), _pts(r.original), _pts(r.value),
                _signed(r.delta) + ("*" if r.significant else ""),
                f"[{_signed(r.ci_low)}, {_signed(r.ci_high)}]", r.ci_method,
                _p(r.mcnemar_p), _int(r.right_to_wrong), _int(r.wrong_to_right), _pct(r.agreement),
                _kl(r.mean_kl), _pct(r.top_agreement), r.verdict,
                (f"YES: {r.collapse_reason}" if r.collapsed else ("no" if r.kind == "task" else "")),
            ])
        return head, body

    def _legend_lines(self) -> list[str]:
        pct = f"{100 * (1 - self.alpha):g}%"
        return [
            f"Scores in points (acc x 100, exact match 0-100). Δ = variant − original; * = the {pct} CI excludes 0.",
            f"{pct} CI (CI method column): right/wrong metrics use Tango's score interval of the paired "
            "difference with a continuity correction (CC), valid at small n and when no answer changed; other "
            "metrics a paired percentile "
            f"bootstrap over examples ({self.iters} resamples, seed {self.seed}); averages combine the per-task "
            "intervals (MOVER), so they are never narrower than their tasks allow.",
            "McNemar p: exact two-sided binomial test on the discordant pairs (r→w: right→wrong, "
            "w→r: wrong→right). agree: same prediction. mean KL: KL(P_original ‖ P_variant) over the choice "
            "softmax; top-1 agree: same highest-loglikelihood choice.",
            f"TOST ±{self.margin:g}: two one-sided tests at α={self.alpha:g} on the "
            f"{100 * (1 - 2 * self.alpha):g}% interval of Δ from the row's CI method (a paired t-interval for "
            f"non-binary task rows): equivalent = inside ±{self.margin:g}; "
            f"worse = entirely below −{self.margin:g}; better = entirely above +{self.margin:g}; "
            "inconclusive = otherwise.",
            "collapsed: at or below chance (multiple choice), a constant answer, or exact match 0 (generation).",
        ]

    # ---- renderers ---------------------------------------------------------------------------------------

    def _tokenizer_warning(self) -> list[str]:
        """Lines for the top of every rendering when runs with different tokenizers were compared anyway."""
        if not self.tokenizer_mismatches:
            return []
        lines = ["TOKENIZER MISMATCH: these runs were tokenized differently, so their differences are not (only) "
                 "quantization effects (compared anyway: allow_tokenizer_mismatch / --allow-tokenizer-mismatch)."]
        for label, diffs in self.tokenizer_mismatches.items():
            lines.append(f"{label} vs original ({self.original.label}): " + "; ".join(diffs))
        return lines

    def to_markdown(self) -> str:
        o = self.original
        out = [f"# Quantization comparison: {self.model}", ""]
        warn = self._tokenizer_warning()
        if warn:
            out += [f"> **{warn[0]}**", ">"] + [f"> - {_md_cell(w)}" for w in warn[1:]] + [""]
        out += [
            f"Original: `{o.run}` ({o.variant}, {o.dtype}). Variants: "
            + ", ".join(f"`{v.run}` ({v.label})" for v in self.variants) + ".", ""]
        for card in self.variants:
            out += [f"## {card.label}", "", _md_table(*self._card_table(card)), ""]
        out += ["## Per-task comparison", "", _md_table(*self._comparison_table()), ""]
        out += [f"- {line}" for line in self._legend_lines()]
        if self.notes:
            out += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def _png_bytes(self) -> bytes:
        fig = self._figure()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        return buf.getvalue()

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Write the chart (PNG, or any format matplotlib infers from the suffix) and return its path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._figure().savefig(p, dpi=120, bbox_inches="tight")
        return p

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        """One self-contained HTML file: cards, the comparison table, legend, notes and the embedded chart."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        img = base64.b64encode(self._png_bytes()).decode("ascii")
        esc = html.escape
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>jbench comparison: {esc(self.model)}</title>", f"<style>{_CSS}</style></head><body>",
            f"<h1>Quantization comparison: {esc(self.model)}</h1>",
            *([f'<div class="warning"><p><strong>{esc(w[0])}</strong></p><ul>'
               + "".join(f"<li>{esc(x)}</li>" for x in w[1:]) + "</ul></div>"]
              if (w := self._tokenizer_warning()) else []),
            f"<p>Original: <code>{esc(self.original.run)}</code> ({esc(self.original.variant)}, "
            f"{esc(self.original.dtype)})</p>",
            f'<img alt="scores and paired differences per task" src="data:image/png;base64,{img}">',
            "<h2>Per-task comparison</h2>", _html_table(*self._comparison_table(), highlight=True),
            "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in self._legend_lines()) + "</ul>",
        ]
        for card in self.variants:
            parts += [f"<h2>{esc(card.label)}</h2>", _html_table(*self._card_table(card))]
        if self.notes:
            parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in self.notes) + "</ul>"]
        parts.append("</body></html>")
        p.write_text("\n".join(parts) + "\n", encoding="utf-8")
        return p

    def _figure(self) -> Figure:
        # Figure + Agg canvas directly: no pyplot global state, no GUI backend, safe in threads and servers.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.artist import Artist
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        groups = self.tasks + [name for name in AVERAGES if any(r.task == name for r in self.rows)]
        labels = [self.original.label] + [v.label for v in self.variants]
        nbars = len(labels)
        width = 0.8 / nbars
        xs = np.arange(len(groups), dtype=float)
        xs[len(self.tasks):] += 0.5  # set the averages apart
        fig = Figure(figsize=(max(8.0, 1.0 + len(groups) * (0.55 + 0.32 * nbars)), 8.5))
        FigureCanvasAgg(fig)
        ax, dax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2], "hspace": 0.08})
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
        colors = ["#555555"] + [palette[i % len(palette)] for i in range(len(self.variants))]

        def first_row(task: str) -> TaskComparison | None:
            return next((r for r in self.rows if r.task == task), None)

        chance_drawn = False
        for gi, task in enumerate(groups):
            ref = first_row(task)
            if ref is None:
                continue
            if ref.chance is not None and ref.chance > 0:
                ax.hlines(ref.chance, xs[gi] - 0.45, xs[gi] + 0.45, colors="#333333", linestyles=(0, (2, 2)),
                          lw=1.2, zorder=5)
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
                        r = self.row(task, label)
                    except KeyError:
                        continue
                    val, (lo, hi), is_coll = r.value, r.value_ci, r.collapsed
                x = xs[gi] + off
                ax.bar(x, val, width * 0.92, color=colors[bi], edgecolor="red" if is_coll else "white",
                       hatch="xx" if is_coll else None, lw=1.5 if is_coll else 0.5, zorder=2)
                ax.errorbar(x, val, yerr=[[max(0.0, val - lo)], [max(0.0, hi - val)]], fmt="none",
                            ecolor="black", elinewidth=1, capsize=2, zorder=3)
                if is_coll:
                    ax.text(x, max(hi, val) + 1.5, "collapsed", rotation=90, ha="center", va="bottom",
                            color="red", fontsize=8, fontweight="bold", zorder=4)
                elif nbars <= 4:
                    ax.text(x, max(hi, val) + 1.0, f"{val:.1f}", ha="center", va="bottom", fontsize=7,
                            rotation=90 if nbars > 2 else 0, zorder=4)
                if bi > 0:
                    color = "red" if r.verdict == stats.WORSE else colors[bi]
                    dax.errorbar(x, r.delta, yerr=[[max(0.0, r.delta - r.ci_low)], [max(0.0, r.ci_high - r.delta)]],
                                 fmt="o", mfc=colors[bi] if r.significant else "white", mec=colors[bi],
                                 ecolor=colors[bi], capsize=3, ms=5, zorder=3)
                    dax.annotate(f"{r.delta:+.1f}", (x, r.ci_high), xytext=(0, 5), textcoords="offset points",
                                 ha="center", va="bottom", fontsize=7, color=color,
                                 rotation=90 if nbars > 3 else 0,
                                 fontweight="bold" if r.verdict == stats.WORSE else "normal")
        ax.set_ylabel("score (points)")
        top = max([r.value_ci[1] for r in self.rows] + [r.original_ci[1] for r in self.rows] + [10.0])
        ax.set_ylim(0, min(110.0, top + 14))
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax.set_axisbelow(True)
        ax.set_title("scores; error bars: 95% bootstrap CI of each run's mean", fontsize=9, loc="left")
        if len(self.tasks) < len(groups):
            for a in (ax, dax):
                a.axvline((xs[len(self.tasks) - 1] + xs[len(self.tasks)]) / 2, color="#bbbbbb", lw=1)
        handles: list[Artist] = [Patch(facecolor=colors[i], label=("original: " if i == 0 else "") + lab)
                   for i, lab in enumerate(labels)]
        if chance_drawn:
            handles.append(Line2D([], [], color="#333333", ls=(0, (2, 2)), label="chance level"))
        if any(r.collapsed or r.original_collapsed for r in self.rows):
            handles.append(Patch(facecolor="white", edgecolor="red", hatch="xx", label="collapsed"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)

        m = self.margin
        band = dax.axhspan(-m, m, color="#2ca02c", alpha=0.12, zorder=0)
        dax.axhline(0, color="black", lw=0.8)
        lows = [r.ci_low for r in self.rows if math.isfinite(r.ci_low)]
        highs = [r.ci_high for r in self.rows if math.isfinite(r.ci_high)]
        span = max([m * 1.5] + [abs(v) for v in lows + highs])
        dax.set_ylim(-span * 1.2, span * 1.2)
        dax.set_ylabel("Δ vs original (points)")
        dax.set_title(f"paired difference Δ with {100 * (1 - self.alpha):g}% paired CI (see CI method); "
                      "bold red label: TOST 'worse' "
                      f"(loss beyond {m:g} pt)", fontsize=9, loc="left")
        dax.grid(axis="y", alpha=0.3, zorder=0)
        dax.legend(handles=[band, Line2D([], [], marker="o", ls="", color="#555555", label="CI excludes 0"),
                            Line2D([], [], marker="o", ls="", mfc="white", color="#555555", label="CI includes 0")],
                   labels=[f"±{m:g} pt equivalence margin", "CI excludes 0 (real change)", "CI includes 0"],
                   loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        dax.set_xticks(xs)
        dax.set_xticklabels([_tick(g) for g in groups], fontsize=8)
        fig.subplots_adjust(top=0.9)
        fig.suptitle(f"{self.model}: original ({self.original.label}) vs "
                     + ", ".join(v.label for v in self.variants), fontsize=12, fontweight="bold", y=0.955)
        return fig


# --------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------

NA = "n/a"


def _finite(v: float | None) -> TypeGuard[float]:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _pts(v: float | None) -> str:
    return f"{v:.2f}" if _finite(v) else NA


def _signed(v: float | None) -> str:
    return f"{v:+.2f}" if _finite(v) else NA


def _p(v: float | None) -> str:
    if not _finite(v):
        return NA
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _int(v: int | None) -> str:
    return NA if v is None else str(v)


def _pct(v: float | None) -> str:
    return f"{100 * v:.1f}%" if _finite(v) else NA


def _kl(v: float | None) -> str:
    return f"{v:.3g}" if _finite(v) else NA


def _bytes(v: float | None) -> str:
    if not _finite(v):
        return NA
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f} B"


def _mb(v: float | None) -> str:
    if not _finite(v):
        return NA
    return f"{v / 1024:.2f} GiB" if v >= 1024 else f"{v:.0f} MiB"


def _secs(v: float | None) -> str:
    return f"{v:.1f} s" if _finite(v) else NA


def _tps(v: float | None) -> str:
    return f"{v:.1f} tok/s" if _finite(v) else NA


def _with_ratio(text: str, v: float | None, ref: float | None, how: str) -> str:
    if not (_finite(v) and _finite(ref)) or not ref:
        return text
    return f"{text} ({100 * v / ref:.0f}% of original)" if how == "pct" else f"{text} (x{v / ref:.2f})"


def _tick(group: str) -> str:
    if group in AVERAGES:
        return group.replace(" average", "\naverage")
    fam, _, rest = group.partition("-")
    return f"{fam}\n{rest}" if rest else fam


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(head: list[str], body: list[list[str]], highlight: bool = False) -> str:
    esc = html.escape
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
    for row in body:
        cls = []
        if highlight:
            if row[-1].startswith("YES"):
                cls.append("collapsed")
            verdict = row[-2]
            cls.append(f"v-{verdict}")
        attr = f' class="{" ".join(cls)}"' if cls else ""
        out.append(f"<tr{attr}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.3em 0.6em;text-align:right}
th{background:#f3f3f3}
td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}
tr.v-worse td:nth-last-child(2){color:#b00020;font-weight:bold}
tr.v-equivalent td:nth-last-child(2){color:#1b7f1b}
tr.collapsed{background:#ffe5e5}
img{max-width:100%;border:1px solid #ddd}
code{background:#f3f3f3;padding:0 0.2em}
div.warning{border:2px solid #b00020;background:#fff0f0;padding:0.5em 1em;margin:1em 0}
""".strip()
