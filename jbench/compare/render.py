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
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from jbench import stats
from jbench.compare.model import ComparisonData, RunCard
from jbench.jafont import EMBEDDED_FAMILY, embedded_font_css, plot_fonts

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
            ["engine", o.engine, card.engine],
            ["size on disk", _bytes(o.disk_bytes), _with_ratio(_bytes(card.disk_bytes), card.disk_bytes,
                                                                  o.disk_bytes, "pct")],
            ["weights in memory", _bytes(o.size_bytes), _with_ratio(_bytes(card.size_bytes), card.size_bytes,
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
        if worst is not None and worst.delta < 0:  # nothing lost: no "largest loss +0.00" row
            body.append(["largest loss", "", f"{worst.task}: {_signed(worst.delta)} pts "
                                             f"[{_signed(worst.ci_low)}, {_signed(worst.ci_high)}]"])
        coll = [f"{r.task} ({r.collapse_reason})" for r in tasks if r.collapsed]
        body.append(["collapsed tasks", "", "; ".join(coll) if coll else "none"])
        return head, body

    def _comparison_table(self) -> tuple[list[str], list[list[str]]]:
        o = self.original  # the original's dtype in the header: "GPTQ vs fp16" must be visible in the table
        head = ["task", "variant", "metric", "n", f"original ({o.variant}, {o.dtype})", "variant score", "Δ pts",
                f"{100 * (1 - self.alpha):g}% CI", "CI method", "McNemar p", "r→w", "w→r", "agree", "mean KL (nats)",
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

    def _cost_table(self) -> tuple[list[str], list[list[str]]]:
        """What each run costs, one row per run: size on disk beside the weights' memory footprint (an on-the-fly
        variant such as int8 loads the original's files, so only its memory shrinks), peak memory, load time,
        throughput; ratios are to the original."""
        o = self.original
        head = ["run", "variant / dtype", "size on disk", "weights in memory", "peak memory", "load time",
                "throughput"]
        body = []
        for card in [o] + list(self.variants):
            mine = card is not o
            body.append([
                ("original: " if not mine else "") + card.run, f"{card.variant} / {card.dtype}",
                _with_ratio(_bytes(card.disk_bytes), card.disk_bytes, o.disk_bytes, "pct") if mine
                else _bytes(card.disk_bytes),
                _with_ratio(_bytes(card.size_bytes), card.size_bytes, o.size_bytes, "pct") if mine
                else _bytes(card.size_bytes),
                _with_ratio(_mb(card.peak_rss_mb), card.peak_rss_mb, o.peak_rss_mb, "pct") if mine
                else _mb(card.peak_rss_mb),
                _with_ratio(_secs(card.load_s), card.load_s, o.load_s, "x") if mine else _secs(card.load_s),
                _with_ratio(_tps(card.tokens_per_s), card.tokens_per_s, o.tokens_per_s, "x") if mine
                else _tps(card.tokens_per_s),
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
            "softmax, in nats (natural log; 0 = identical choice distributions); top-1 agree: same "
            "highest-loglikelihood choice.",
            f"TOST ±{self.margin:g}: two one-sided tests at α={self.alpha:g} on the "
            f"{100 * (1 - 2 * self.alpha):g}% interval of Δ from the row's CI method (a paired t-interval for "
            f"non-binary task rows): equivalent = inside ±{self.margin:g}; "
            f"worse = entirely below −{self.margin:g}; better = entirely above +{self.margin:g}; "
            "inconclusive = otherwise.",
            "collapsed: at or below the chance line (multiple choice: 1/k, or the majority-class rate when the gold "
            "labels of the evaluated examples are imbalanced), a constant answer, or exact match 0 (generation).",
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
        out += ["## Size and speed", "", _md_table(*self._cost_table()), ""]
        out += ["## Per-task comparison", "", _md_table(*self._comparison_table()), ""]
        out += self._published_lines()
        out += [f"- {line}" for line in self._legend_lines()]
        if self.notes:
            out += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def _published_lines(self) -> list[str]:
        """The measured original beside its model's published score (``jbench published``), when there is one."""
        from jbench.errors import JBenchError
        from jbench.published.verdict import published_lines
        from jbench.results import load_run

        try:
            run = load_run(self.original.path)
        except (JBenchError, OSError):  # the original's folder is gone: the report stands without this section
            return []
        lines = published_lines(run.data, self.original.run)
        return ["## Original vs published", ""] + lines + [""] if lines else []

    def _png_bytes(self) -> bytes:
        buf = io.BytesIO()
        with plot_fonts():  # a Japanese font for model and task names (drawn at save time)
            self._figure().savefig(buf, format="png", dpi=120, bbox_inches="tight")
        return buf.getvalue()

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Write the chart (PNG, or any format matplotlib infers from the suffix) and return its path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with plot_fonts():
            self._figure().savefig(p, dpi=120, bbox_inches="tight")
        return p

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        """One self-contained HTML file: cards, the comparison table, legend, notes and the embedded chart."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        img = base64.b64encode(self._png_bytes()).decode("ascii")
        esc = html.escape
        parts = [
            f"<h1>Quantization comparison: {esc(self.model)}</h1>",
            *([f'<div class="warning"><p><strong>{esc(w[0])}</strong></p><ul>'
               + "".join(f"<li>{esc(x)}</li>" for x in w[1:]) + "</ul></div>"]
              if (w := self._tokenizer_warning()) else []),
            f"<p>Original: <code>{esc(self.original.run)}</code> ({esc(self.original.variant)}, "
            f"{esc(self.original.dtype)})</p>",
            f'<img alt="scores and paired differences per task" src="data:image/png;base64,{img}">',
            "<h2>Per-task comparison</h2>",
            f'<div class="wide">{_html_table(*self._comparison_table(), highlight=True)}</div>',
            "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in self._legend_lines()) + "</ul>",
            "<h2>Size and speed</h2>", _html_table(*self._cost_table()),
        ]
        for card in self.variants:
            parts += [f"<h2>{esc(card.label)}</h2>", _html_table(*self._card_table(card))]
        if self.notes:
            parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in self.notes) + "</ul>"]
        body = "\n".join(parts)
        title = f"jbench comparison: {self.model}"
        # Japanese model / task names render on machines without Japanese fonts too (embedded subset)
        css = _CSS + "\n" + embedded_font_css(title + body)
        head = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
                f"<style>{css}</style></head><body>"]
        p.write_text("\n".join(head) + "\n" + body + "\n</body></html>\n", encoding="utf-8")
        return p

    def _figure(self) -> Figure:
        """The chart (:mod:`jbench.compare.chart`); draw and save it inside :func:`jbench.jafont.plot_fonts`."""
        from jbench.compare.chart import comparison_figure

        return comparison_figure(self)


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


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


#: a number, optionally signed / starred / with a unit and a parenthesised remark ("1.20 GiB (50% of original)",
#: "+0.50*", "<0.001", "97.5%", "1.2e-05"), or an interval "[-1.00, +2.00]": such cells (and their header) align right
_NUMERIC = re.compile(r"^[<>]?[+\-]?\d[\d.,]*(e[+\-]?\d+)?(\*|%| B| [KMG]iB| s| tok/s)?( \([^)]*\))?$|^\[[^\]]*\]$")


def _right_aligned(body: list[list[str]], col: int) -> bool:
    """Whether a column holds numbers: every cell numeric, apart from blanks and n/a (with at least one number)."""
    cells = [row[col] for row in body if col < len(row) and row[col] not in ("", NA)]
    return bool(cells) and all(_NUMERIC.match(c) for c in cells)


def _md_table(head: list[str], body: list[list[str]]) -> str:
    """A markdown table whose numeric columns are right-aligned (``---:``), header included."""
    rules = ["---:" if _right_aligned(body, i) else "---" for i in range(len(head))]
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(head: list[str], body: list[list[str]], highlight: bool = False) -> str:
    """An HTML table; a numeric column's header and cells are right-aligned alike (class ``num``), others left."""
    esc = html.escape
    num = [_right_aligned(body, i) for i in range(len(head))]

    def align(i: int) -> str:
        return ' class="num"' if i < len(num) and num[i] else ""

    out = ["<table>", "<thead><tr>" + "".join(f"<th{align(i)}>{esc(h)}</th>" for i, h in enumerate(head))
           + "</tr></thead>", "<tbody>"]
    previous = None
    for row in body:
        cls = []
        if highlight:
            if row[0] != previous:  # a rule between tasks: the variants of one task read as one block
                cls.append("first")
                previous = row[0]
            if row[-1].startswith("YES"):
                cls.append("collapsed")
            verdict = row[-2]
            cls.append(f"v-{verdict}")
        attr = f' class="{" ".join(cls)}"' if cls else ""
        out.append(f"<tr{attr}>" + "".join(f"<td{align(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Hiragino Sans","Yu Gothic","Noto Sans CJK JP","{embedded}",sans-serif;
margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
div.wide{overflow-x:auto}
div.wide table{font-size:0.8em}
div.wide td{white-space:nowrap}
tr.first td{border-top:2px solid #888}
th,td{border:1px solid #ccc;padding:0.3em 0.6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.v-worse td:nth-last-child(2){color:#b00020;font-weight:bold}
tr.v-equivalent td:nth-last-child(2){color:#1b7f1b}
tr.collapsed{background:#ffe5e5}
img{max-width:100%;border:1px solid #ddd}
code{font-family:ui-monospace,monospace,"{embedded}";background:#f3f3f3;padding:0 0.2em}
div.warning{border:2px solid #b00020;background:#fff0f0;padding:0.5em 1em;margin:1em 0}
""".strip().replace("{embedded}", EMBEDDED_FAMILY)
