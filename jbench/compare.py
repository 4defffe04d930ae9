"""Original-vs-quantized comparison: how much did quantization cost, on which task, and is the loss real?

Runs are joined example by example (by ``doc_id``) and every statistic is paired (see :mod:`jbench.stats`).
Before any number is computed the runs are checked to have scored *the same thing*: the same task versions and
few-shot counts, the same documents, the same prompts, choices and gold answers, and the same tokenizer (its
identity in ``config.tokenizer``). Anything else would make a "quantization loss" that is really a prompt, data or
tokenizer difference, so it is an error, not a warning (a tokenizer difference can be let through explicitly with
``allow_tokenizer_mismatch=True``; the report then says so at the top).

Intervals: right/wrong metrics get the continuity-corrected Tango score interval of the paired difference and a
TOST on it (:func:`jbench.stats.tost_paired_binary`), other metrics the paired bootstrap and a paired t TOST, and
the averages combine the per-task intervals (:func:`jbench.stats.mover_average`). Each row names its method
(``ci_method``).

Entry point: :func:`compare_runs` → :class:`ComparisonReport` (``to_markdown``, ``to_json``, ``write_html``,
``plot``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from jbench import stats
from jbench.errors import JBenchError
from jbench.records import GOLD, GOLDS, PREDICTION
from jbench.results import Run, load_run

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["AVERAGES", "ComparisonError", "ComparisonReport", "RunCard", "TaskComparison", "TokenizerMismatchError",
           "compare_runs", "task_family"]

#: The published averages: name -> task families (prefix of the task name before the first "-").
AVERAGES: dict[str, tuple[str, ...]] = {
    "4-task average": ("jcommonsenseqa", "jnli", "marc_ja", "jsquad"),
    "6-task average": ("jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2", "xwinograd_ja"),
}
#: Below this many examples a constant prediction can be luck, so it is not called a collapse.
MIN_N_CONSTANT_COLLAPSE = 20


class ComparisonError(JBenchError):
    """The runs cannot be compared example by example (different tasks, documents or prompts)."""


class TokenizerMismatchError(ComparisonError):
    """A variant's requests were built by a different tokenizer than the original's (or one of the runs does not
    record which): its differences would mix tokenization with quantization. Exit 2, like every input error."""


def task_family(task: str) -> str:
    """``jcommonsenseqa-1.1-0.3`` → ``jcommonsenseqa`` (families are what the averages are defined over)."""
    return task.split("-", 1)[0]


# --------------------------------------------------------------------------------------------------------------
# Report data
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCard:
    """Who a run is and what it costs to serve: the facts beside the scores. Missing resources are None."""

    label: str
    run: str
    path: str
    model: str
    variant: str
    dtype: str
    size_bytes: float | None = None
    peak_rss_mb: float | None = None
    load_s: float | None = None
    tokens_per_s: float | None = None
    tokenizer: Any = None  # config.tokenizer: an identity dict, or a bare kind string in old runs

    @classmethod
    def from_run(cls, run: Run, label: str) -> "RunCard":
        cfg = run.config
        res = cfg.get("resources") or run.data.get("resources") or {}

        def num(key: str) -> float | None:
            v = res.get(key)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

        return cls(label=label, run=run.path.name, path=str(run.path), model=str(cfg.get("model", "?")),
                   variant=str(cfg.get("variant", "?")), dtype=str(cfg.get("dtype", "?")),
                   size_bytes=num("size_bytes"), peak_rss_mb=num("peak_rss_mb"), load_s=num("load_s"),
                   tokens_per_s=num("tokens_per_s"), tokenizer=cfg.get("tokenizer"))


@dataclass(frozen=True)
class TaskComparison:
    """One (task or average, variant) row. Scores and Δ are in points (acc x 100, exact match 0-100).

    Statistics that do not apply are None: McNemar/flips need 0/1 outcomes, KL needs loglikelihoods, and none
    of the per-example statistics exist for averages.
    """

    task: str
    variant: str
    kind: str  # "task" | "average"
    metric: str
    n: int
    original: float
    value: float
    delta: float
    ci_low: float
    ci_high: float
    original_ci: tuple[float, float]
    value_ci: tuple[float, float]
    tost: stats.TostResult
    mcnemar_p: float | None = None
    right_to_wrong: int | None = None
    wrong_to_right: int | None = None
    agreement: float | None = None
    mean_kl: float | None = None
    top_agreement: float | None = None
    chance: float | None = None
    collapsed: bool = False
    collapse_reason: str | None = None
    original_collapsed: bool = False
    ci_method: str = stats.BOOTSTRAP_METHOD  # how ci_low/ci_high and the TOST interval were computed

    @property
    def verdict(self) -> str:
        return self.tost.verdict

    @property
    def significant(self) -> bool:
        """The (1 − alpha) paired CI excludes 0: the change is real (not sampling noise)."""
        return self.ci_low > 0 or self.ci_high < 0


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf → None, tuples → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


@dataclass
class ComparisonReport:
    """Everything :func:`compare_runs` found, plus renderers (markdown, JSON, HTML, PNG)."""

    model: str
    original: RunCard
    variants: list[RunCard]
    rows: list[TaskComparison]
    tasks: list[str]
    margin: float
    alpha: float
    iters: int
    seed: int
    notes: list[str] = field(default_factory=list)
    #: variant label -> the tokenizer identity fields that differ from the original's (only with the override)
    tokenizer_mismatches: dict[str, list[str]] = field(default_factory=dict)

    # ---- access ------------------------------------------------------------------------------------------

    def row(self, task: str, variant: str) -> TaskComparison:
        for r in self.rows:
            if r.task == task and r.variant == variant:
                return r
        raise KeyError((task, variant))

    def rows_for(self, variant: str) -> list[TaskComparison]:
        return [r for r in self.rows if r.variant == variant]

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["verdict"] = r.verdict
            d["significant"] = r.significant
            rows.append(d)
        return _clean({
            "model": self.model,
            "tokenizer_mismatch": self.tokenizer_mismatches,
            "settings": {"margin": self.margin, "alpha": self.alpha, "ci_level": 1 - self.alpha,
                         "bootstrap_iters": self.iters, "seed": self.seed,
                         "ci_method": {"binary": stats.SCORE_METHOD, "other": stats.BOOTSTRAP_METHOD,
                                       "average": stats.MOVER_METHOD},
                         "equivalence_test": "TOST on the (1 - 2 alpha) interval of each row's ci_method "
                                             "(paired t-interval for non-binary task rows)",
                         "tokenizer_mismatch_allowed": bool(self.tokenizer_mismatches)},
            "original": asdict(self.original),
            "variants": [asdict(v) for v in self.variants],
            "tasks": self.tasks,
            "rows": rows,
            "notes": self.notes,
        })

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_frame(self) -> pandas.DataFrame:
        """The comparison table as a DataFrame (one row per task/average and variant), for notebooks."""
        import pandas as pd

        recs = []
        for r in self.rows:
            d = {k: v for k, v in asdict(r).items() if k not in ("tost", "original_ci", "value_ci")}
            d.update(verdict=r.verdict, tost_p=r.tost.p, significant=r.significant)
            recs.append(d)
        return pd.DataFrame(recs)

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
# Joining runs
# --------------------------------------------------------------------------------------------------------------


def _fewshot(run: Run) -> dict[str, Any]:
    tasks, shots = run.config.get("tasks"), run.config.get("num_fewshot")
    if isinstance(tasks, list) and isinstance(shots, list) and len(tasks) == len(shots):
        return dict(zip(tasks, shots))
    return {}


def _check_task_sets(original: Run, variant: Run, label: str, tasks: list[str], notes: list[str]) -> list[str]:
    """Tasks both runs have; a task present under another version or prompt version is an error."""
    vtasks = list(variant.results)
    common = []
    for t in tasks:
        if t in variant.results:
            common.append(t)
            continue
        others = [v for v in vtasks if task_family(v) == task_family(t) and v not in original.results]
        if others:
            raise ComparisonError(
                f"task {task_family(t)} was run as {t} in the original but as {', '.join(others)} in {label}: "
                "different task or prompt versions score different prompts and cannot be compared",
                where=f"{original.path} vs {variant.path}",
                fix=f"rerun {label} with --tasks {t} (or the original with the variant's task name)")
        notes.append(f"{label}: task {t} is missing from run {variant.path.name}; it is left out for this variant")
    ov, vv = original.versions, variant.versions
    ofs, vfs = _fewshot(original), _fewshot(variant)
    opv = original.config.get("prompt_versions") or {}
    vpv = variant.config.get("prompt_versions") or {}
    for t in common:
        for what, od, vd in (("task version", ov, vv), ("number of few-shot examples", ofs, vfs),
                             ("prompt version", opv, vpv)):
            if t in od and t in vd and od[t] != vd[t]:
                raise ComparisonError(
                    f"{t}: the {what} differs (original {od[t]!r}, {label} {vd[t]!r}), so the runs did not "
                    "score the same prompts", where=f"{original.path} vs {variant.path}",
                    fix=f"rerun {label} with the original's settings for {t}")
    if not common:
        raise ComparisonError(f"{label} shares no task with the original",
                              where=f"{original.path} vs {variant.path}",
                              fix="compare runs of the same tasks (see the 'results' keys of each results.json)")
    return common


def _keyed(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Rows by doc_id; a repeated doc_id gets its occurrence number (both runs enumerate the same data order)."""
    seen: Counter[Any] = Counter()
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        doc = row.get("doc_id", row.get("doc_index"))
        doc = str(doc)
        key = doc if seen[doc] == 0 else f"{doc}#{seen[doc]}"
        seen[doc] += 1
        out[key] = row
    return out


def _first_diff(x: str, y: str) -> str:
    i = next((k for k, (c, d) in enumerate(zip(x, y)) if c != d), min(len(x), len(y)))
    return f"at character {i}: {x[max(0, i - 20): i + 30]!r} vs {y[max(0, i - 20): i + 30]!r}"


def _align(task: str, orig: list[dict[str, Any]], var: list[dict[str, Any]], label: str, original: Run,
           variant: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ka, kb = _keyed(orig), _keyed(var)
    where = f"{original.path / f'samples_{task}.jsonl'} vs {variant.path / f'samples_{task}.jsonl'}"
    if ka.keys() != kb.keys():
        only_a = [k for k in ka if k not in kb]
        only_b = [k for k in kb if k not in ka]
        raise ComparisonError(
            f"{task}: the runs scored different documents (original {len(ka)}, {label} {len(kb)}; "
            f"{len(only_a)} only in the original, e.g. {only_a[:3]}; {len(only_b)} only in {label}, "
            f"e.g. {only_b[:3]})", where=where,
            fix="rerun both with the same data files and the same --limit (a paired comparison needs the same "
                "questions)")
    pa, pb = [], []
    bad: list[str] = []
    for key in ka:  # the original's order
        ra, rb = ka[key], kb[key]
        if ra.get("prompt") != rb.get("prompt"):
            bad.append(f"doc {key}: prompt differs {_first_diff(str(ra.get('prompt')), str(rb.get('prompt')))}")
        elif ra.get("continuations") != rb.get("continuations"):
            bad.append(f"doc {key}: answer choices differ ({ra.get('continuations')} vs {rb.get('continuations')})")
        elif ra.get(GOLD) != rb.get(GOLD) or ra.get(GOLDS) != rb.get(GOLDS):
            bad.append(f"doc {key}: gold answer differs")
        pa.append(ra)
        pb.append(rb)
    if bad:
        raise ComparisonError(
            f"{task}: {len(bad)} of {len(ka)} documents were not asked the same way in {label} "
            f"(first: {bad[0]})", where=where,
            fix="rerun both with the same task version, prompt version, few-shot count and seed, and the same "
                "SYSTEM_PROMPT / DYNAMIC_MAX_LENGTH settings and max length")
    return pa, pb


# --------------------------------------------------------------------------------------------------------------
# Per-task statistics
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Paired:
    """Aligned per-example scores (points) of one task for the original and one variant."""

    task: str
    metric: str
    a: np.ndarray
    b: np.ndarray
    ci: tuple[float, float] = (float("nan"), float("nan"))       # the task's (1 − alpha) interval of Δ
    tost_ci: tuple[float, float] = (float("nan"), float("nan"))  # its (1 − 2·alpha) interval (TOST)
    method: str = stats.BOOTSTRAP_METHOD


def _is_mc(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and "loglikelihoods" in rows[0]


def _metric_values(rows: list[dict[str, Any]], metric: str, task: str) -> np.ndarray:
    try:
        return np.asarray([float(r[metric]) for r in rows], dtype=float) * 100.0
    except (KeyError, TypeError, ValueError) as err:
        raise ComparisonError(f"{task}: sample rows lack a numeric {metric!r}") from err


def _collapse(value: float, chance: float, rows: list[dict[str, Any]], mc: bool) -> tuple[bool, str | None]:
    if mc:
        if stats.collapsed(value, chance):
            return True, f"at or below chance ({chance:.1f})"
        preds = {r.get(PREDICTION) for r in rows}
        golds = {r.get(GOLD) for r in rows}
        if len(rows) >= MIN_N_CONSTANT_COLLAPSE and len(preds) == 1 and len(golds) > 1:
            return True, f"always answers choice {next(iter(preds))}"
        return False, None
    if stats.collapsed(value, 0.0):
        empty = all(not str(r.get(PREDICTION) or "").strip() for r in rows)
        return True, "exact match 0" + (" (all generations empty)" if empty else "")
    return False, None


def _compare_task(task: str, ra: list[dict[str, Any]], rb: list[dict[str, Any]], label: str, *, margin: float,
                  alpha: float, iters: int, seed: int, notes: list[str]) -> tuple[TaskComparison, _Paired]:
    mc = _is_mc(ra)
    if mc != _is_mc(rb):
        raise ComparisonError(f"{task}: one run stored multiple-choice rows and the other generation rows")
    metric = "acc" if mc else "exact_match"
    a, b = _metric_values(ra, metric, task), _metric_values(rb, metric, task)
    n = a.size
    ma, mb = stats.bootstrap_means(a, b, iters=iters, rng=np.random.default_rng(seed))
    q = (alpha / 2, 1 - alpha / 2)
    orig, val = float(a.mean()), float(b.mean())
    binary = stats.is_binary(a / 100) and stats.is_binary(b / 100)
    ci_d, tost, method = _task_interval(a, b, binary, ma, mb, margin=margin, alpha=alpha)

    mcn = r2w = w2r = None
    if binary:
        b01, b10, mcn = stats.mcnemar_exact(a / 100, b / 100)
        r2w, w2r = b10, b01
    if mc:
        agree = stats.agreement([r.get(PREDICTION) for r in ra], [r.get(PREDICTION) for r in rb])
    else:
        agree = stats.agreement([str(r.get(PREDICTION) or "").strip() for r in ra],
                                [str(r.get(PREDICTION) or "").strip() for r in rb])
    kl = top = None
    chance: float
    if mc:
        ckl = stats.choice_kl([r["loglikelihoods"] for r in ra], [r["loglikelihoods"] for r in rb])
        kl, top = ckl.mean_kl, ckl.top_agreement
        if ckl.n_nonfinite:
            notes.append(f"{label} / {task}: {ckl.n_nonfinite} examples with non-finite loglikelihoods are left "
                         "out of the KL")
        chance = 100.0 * float(np.mean([stats.chance_level(max(1, len(r.get("continuations") or
                                                                       r["loglikelihoods"]))) for r in ra]))
    else:
        chance = 0.0
    is_coll, reason = _collapse(val, chance, rb, mc)
    orig_coll, orig_reason = _collapse(orig, chance, ra, mc)
    if orig_coll:
        msg = f"{task}: the original itself is collapsed ({orig_reason}); differences on it say little"
        if msg not in notes:
            notes.append(msg)
    row = TaskComparison(
        task=task, variant=label, kind="task", metric=metric, n=n, original=orig, value=val, delta=val - orig,
        ci_low=float(ci_d[0]), ci_high=float(ci_d[1]),
        original_ci=tuple(float(v) for v in np.quantile(ma, q)),  # type: ignore[arg-type]
        value_ci=tuple(float(v) for v in np.quantile(mb, q)),  # type: ignore[arg-type]
        tost=tost, mcnemar_p=mcn, right_to_wrong=r2w, wrong_to_right=w2r, agreement=agree, mean_kl=kl,
        top_agreement=top, chance=chance, collapsed=is_coll, collapse_reason=reason, original_collapsed=orig_coll,
        ci_method=method)
    return row, _Paired(task, metric, a, b, (row.ci_low, row.ci_high), (tost.lo, tost.hi), method)


def _task_interval(a: np.ndarray, b: np.ndarray, binary: bool, ma: np.ndarray, mb: np.ndarray, *, margin: float,
                   alpha: float) -> tuple[tuple[float, float], stats.TostResult, str]:
    """The (1 − alpha) interval of Δ, the TOST on the (1 − 2·alpha) one, and the method's name, for one task.

    Right/wrong outcomes: the continuity-corrected Tango score interval (correct coverage at any n, and not a
    point when no answer changed). Other metrics: the paired bootstrap and a paired t TOST, except that when no
    example's score changed at all (both collapse to the point 0) the exact bound on how many could have
    changed unseen is used instead: values are points in [0, 100], so |Δ| ≤ 100 × that share.
    """
    if binary:
        tost = stats.tost_paired_binary(a, b, margin, alpha, scale=100.0)
        _, lo, hi = stats.tango_ci(a, b, alpha=alpha, scale=100.0)
        return (lo, hi), tost, stats.SCORE_METHOD
    d = b - a
    if not np.any(d):
        half, half2 = (100.0 * stats.zero_change_bound(a.size, x) for x in (alpha / 2, alpha))
        method = "exact bound (no example changed)"
        return (-half, half), stats.tost_from_interval(0.0, -half2, half2, margin, alpha, a.size, method), method
    lo, hi = np.quantile(mb - ma, (alpha / 2, 1 - alpha / 2))
    return (float(lo), float(hi)), stats.tost_equivalence(a, b, margin, alpha), stats.BOOTSTRAP_METHOD


def _compare_average(name: str, paired: list[_Paired], label: str, *, margin: float, alpha: float, iters: int,
                     seed: int) -> TaskComparison:
    """An average of task means: Δ interval and TOST from the per-task intervals (MOVER), bootstrap for the bars.

    Why not a bootstrap of averages (or a pooled standard error) for Δ: when every task agrees on every example
    both are the point 0, and 4 tasks × 5 examples would be "equivalent". MOVER (:func:`stats.mover_average`)
    rebuilds the average's interval from each task's own interval (Tango score for right/wrong tasks), so it is
    at least as wide as those allow and exactly the task's interval for one task. The bootstrap of averages
    still gives each run's own score interval (``original_ci``/``value_ci``, the chart's error bars).
    """
    rng = np.random.default_rng(seed)
    t = len(paired)
    sum_a, sum_b = np.zeros(iters), np.zeros(iters)
    for p in paired:
        ma, mb = stats.bootstrap_means(p.a, p.b, iters=iters, rng=rng)
        sum_a += ma
        sum_b += mb
    avg_a, avg_b = sum_a / t, sum_b / t
    q = (alpha / 2, 1 - alpha / 2)
    orig = float(np.mean([p.a.mean() for p in paired]))
    val = float(np.mean([p.b.mean() for p in paired]))
    deltas = [float(p.b.mean() - p.a.mean()) for p in paired]
    _, lo, hi = stats.mover_average(deltas, [p.ci[0] for p in paired], [p.ci[1] for p in paired])
    _, tlo, thi = stats.mover_average(deltas, [p.tost_ci[0] for p in paired], [p.tost_ci[1] for p in paired])
    method = f"{stats.MOVER_METHOD} of {' + '.join(sorted({p.method for p in paired}))}"
    n = sum(p.a.size for p in paired)
    tost = stats.tost_from_interval(val - orig, tlo, thi, margin, alpha, n, method)
    return TaskComparison(
        task=name, variant=label, kind="average", metric="avg points", n=n,
        original=orig, value=val, delta=val - orig, ci_low=lo, ci_high=hi,
        original_ci=tuple(float(v) for v in np.quantile(avg_a, q)),  # type: ignore[arg-type]
        value_ci=tuple(float(v) for v in np.quantile(avg_b, q)),  # type: ignore[arg-type]
        tost=tost, ci_method=method)


# --------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------


def _labels(original: Run, variants: list[Run]) -> tuple[str, list[str]]:
    def base(run: Run) -> str:
        return str(run.config.get("variant") or run.path.name)

    olabel = base(original)
    raw = [base(v) for v in variants]
    counts = Counter(raw + [olabel])
    labels = [f"{lab} ({v.path.name})" if counts[lab] > 1 else lab for lab, v in zip(raw, variants)]
    if len(set(labels)) != len(labels):  # same variant name and the same directory name: number them
        labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    return olabel, labels


def _short_model(model: str) -> str:
    return Path(model).name if model.startswith(("/", ".", "~")) else model


def _as_run(run: Run | str | os.PathLike[str]) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def _check_tokenizers(orig: Run, vruns: list[Run], labels: list[str], allow: bool) -> dict[str, list[str]]:
    """Variant label -> tokenizer identity fields that differ from the original's; raises unless ``allow``.

    Uses :func:`jbench.models.tokenizer.identity_diff`, which also reports a field that a run does not record
    (runs from before identities were stored), so an unknown tokenizer is never taken as the same one. A run
    compared with itself (same directory) is trivially like for like.
    """
    from jbench.models.tokenizer import identity_diff

    out: dict[str, list[str]] = {}
    where: dict[str, Path] = {}
    for run, label in zip(vruns, labels):
        if run.path.resolve() == orig.path.resolve():
            continue
        diff = identity_diff(orig.config.get("tokenizer"), run.config.get("tokenizer"))
        if diff:
            out[label], where[label] = diff, run.path
    if out and not allow:
        detail = "; ".join(f"{label} ({where[label]}): " + ", ".join(d) for label, d in out.items())
        raise TokenizerMismatchError(
            f"the tokenizer of {len(out)} variant run(s) differs from the original's "
            f"(field: original vs variant): {detail}. Their scores would mix a tokenization change with the "
            "quantization effect" + (" ('unknown': that run's results.json does not record the field, e.g. a run "
                                     "from before jbench recorded tokenizer identities)"
                                     if any("unknown" in x for d in out.values() for x in d) else ""),
            where=str(orig.path),
            fix="rerun the variant with the original's tokenizer settings (same tokenizer files and use_fast), or "
                "compare anyway with --allow-tokenizer-mismatch (allow_tokenizer_mismatch=True); the report then "
                "shows the difference at the top")
    return out


def compare_runs(original: Run | str | os.PathLike[str], variants: Sequence[Run | str | os.PathLike[str]], *,
                 margin: float = 1.0, iters: int = 10_000, seed: int = 0, alpha: float = 0.05,
                 tasks: Sequence[str] | None = None, allow_tokenizer_mismatch: bool = False) -> ComparisonReport:
    """Compare each variant run with the original run, task by task and on the 4-/6-task averages.

    ``margin`` (points) is the equivalence margin of the TOST verdict; ``iters``/``seed`` drive the paired
    bootstrap (the report is deterministic for a seed); ``alpha`` sets the CI level (1 − alpha) and the TOST
    level. ``tasks`` restricts the comparison to these task names or families. Raises
    :class:`ComparisonError` if a variant did not score the same documents with the same prompts, and
    :class:`TokenizerMismatchError` if its tokenizer identity differs from the original's, unless
    ``allow_tokenizer_mismatch`` (then the report lists the differences at the top).
    """
    orig = _as_run(original)
    vruns = [_as_run(v) for v in variants]
    if not vruns:
        raise ComparisonError("no variant run to compare with the original",
                              fix="pass at least one quantized run besides the original")
    if not margin > 0:
        raise ComparisonError(f"the equivalence margin must be positive, got {margin}")
    if iters < 100:
        raise ComparisonError(f"{iters} bootstrap iterations are too few for a 95% interval; use at least 1000")
    order = [t for t in (orig.config.get("tasks") or []) if t in orig.results]
    order += [t for t in orig.results if t not in order]
    if tasks:
        wanted = set(tasks)
        order = [t for t in order if t in wanted or task_family(t) in wanted]
        if not order:
            raise ComparisonError(f"the original run has none of the tasks {sorted(wanted)}",
                                  where=str(orig.path), fix=f"choose among: {', '.join(orig.results)}")
    if not order:
        raise ComparisonError("the original run has no task results", where=str(orig.path))
    olabel, labels = _labels(orig, vruns)
    tok_diffs = _check_tokenizers(orig, vruns, labels, allow_tokenizer_mismatch)
    notes: list[str] = []
    omodel = str(orig.config.get("model", "?"))
    for run, label in zip(vruns, labels):
        vm = str(run.config.get("model", "?"))
        if vm != omodel:
            notes.append(f"{label} is a run of model {vm}, the original of {omodel}")

    common = {label: _check_task_sets(orig, run, label, order, notes) for run, label in zip(vruns, labels)}
    orig_samples: dict[str, list[dict[str, Any]]] = {}
    rows: list[TaskComparison] = []
    paired: dict[str, dict[str, _Paired]] = {label: {} for label in labels}
    per_task: dict[str, list[TaskComparison]] = {t: [] for t in order}
    for run, label in zip(vruns, labels):
        for task in common[label]:
            if task not in orig_samples:
                orig_samples[task] = orig.samples(task)
                if not orig_samples[task]:
                    raise ComparisonError(f"{task}: the original run stored no samples",
                                          where=str(orig.path / f"samples_{task}.jsonl"))
            ra, rb = _align(task, orig_samples[task], run.samples(task), label, orig, run)
            row, pr = _compare_task(task, ra, rb, label, margin=margin, alpha=alpha, iters=iters, seed=seed,
                                    notes=notes)
            per_task[task].append(row)
            paired[label][task] = pr
    for task in order:
        rows += per_task[task]

    for name, families in AVERAGES.items():
        for label in labels:
            by_family: dict[str, list[_Paired]] = {}
            for task, pr in paired[label].items():
                by_family.setdefault(task_family(task), []).append(pr)
            missing = [f for f in families if f not in by_family]
            ambiguous = [f for f in families if len(by_family.get(f, [])) > 1]
            if missing:
                if not tasks and len(missing) < len(families):
                    notes.append(f"{label}: no {name} (missing {', '.join(missing)})")
                continue
            if ambiguous:
                notes.append(f"{label}: no {name}: several tasks of {', '.join(ambiguous)} (choose with tasks=)")
                continue
            rows.append(_compare_average(name, [by_family[f][0] for f in families], label, margin=margin,
                                         alpha=alpha, iters=iters, seed=seed))

    cards = [RunCard.from_run(run, label) for run, label in zip(vruns, labels)]
    present = [t for t in order if per_task[t]]
    return ComparisonReport(model=_short_model(omodel), original=RunCard.from_run(orig, olabel), variants=cards,
                            rows=rows, tasks=present, margin=float(margin), alpha=float(alpha), iters=int(iters),
                            seed=int(seed), notes=notes, tokenizer_mismatches=tok_diffs)


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
