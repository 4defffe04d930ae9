"""The comparison's data: run cards, one row per (task or average, variant), and the report's fields with their
JSON / DataFrame forms.

It exists apart from :mod:`jbench.compare.analysis` (which computes these rows) and :mod:`jbench.compare.render`
(which draws them as markdown, HTML and PNG) so that both can depend on it and on nothing of each other's.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from jbench import stats
from jbench.results import Run

if TYPE_CHECKING:
    import pandas

__all__ = ["AVERAGES", "MIN_N_CONSTANT_COLLAPSE", "ComparisonData", "RunCard", "TaskComparison", "task_family"]

#: The published averages: name -> task families (prefix of the task name before the first "-").
AVERAGES: dict[str, tuple[str, ...]] = {
    "4-task average": ("jcommonsenseqa", "jnli", "marc_ja", "jsquad"),
    "6-task average": ("jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2", "xwinograd_ja"),
}
#: Below this many examples a constant prediction can be luck, so it is not called a collapse.
MIN_N_CONSTANT_COLLAPSE = 20


def task_family(task: str) -> str:
    """``jcommonsenseqa-1.1-0.3`` → ``jcommonsenseqa`` (families are what the averages are defined over)."""
    return task.split("-", 1)[0]


@dataclass(frozen=True)
class RunCard:
    """Who a run is and what it costs to serve: the facts beside the scores. Missing resources are None."""

    label: str
    run: str
    path: str
    model: str
    variant: str
    dtype: str
    size_bytes: float | None = None  # the weights in memory (parameters and buffers as loaded)
    peak_rss_mb: float | None = None
    load_s: float | None = None
    tokens_per_s: float | None = None
    tokenizer: Any = None  # config.tokenizer: an identity dict, or a bare kind string in old runs
    disk_bytes: float | None = None  # the checkpoint's weight files on disk
    engine: str = "hf"  # the backend that ran it, with vLLM's version and quantization kernel

    @classmethod
    def from_run(cls, run: Run, label: str) -> "RunCard":
        cfg = run.config
        res = cfg.get("resources") or run.data.get("resources") or {}

        def num(key: str) -> float | None:
            v = res.get(key)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

        disk = num("disk_bytes")
        if disk is None and "disk_bytes" not in res and isinstance(cfg.get("model_path"), str):
            # a run from before disk_bytes was recorded: measure its checkpoint if it is still there
            from jbench.model_files import checkpoint_disk_bytes

            found = checkpoint_disk_bytes(cfg["model_path"], cfg.get("revision"))
            disk = float(found) if found is not None else None
        return cls(label=label, run=run.path.name, path=str(run.path), model=str(cfg.get("model", "?")),
                   variant=str(cfg.get("variant", "?")), dtype=str(cfg.get("dtype", "?")),
                   size_bytes=num("size_bytes"), peak_rss_mb=num("peak_rss_mb"), load_s=num("load_s"),
                   tokens_per_s=num("tokens_per_s"), tokenizer=cfg.get("tokenizer"), disk_bytes=disk,
                   engine=engine_label(cfg))


def engine_label(cfg: dict[str, Any]) -> str:
    """``hf``, or e.g. ``vllm 0.32.0 (kernel gptq_marlin)``: which engine, and which quantized kernel, ran."""
    engine = cfg.get("engine") if isinstance(cfg.get("engine"), dict) else {}
    name = str(cfg.get("backend") or engine.get("name") or "hf")
    if engine.get("version"):
        name += f" {engine['version']}"
    quant = cfg.get("quantization") if isinstance(cfg.get("quantization"), dict) else {}
    if quant.get("kernel"):
        name += f" (kernel {quant['kernel']})"
    return name


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
    chance: float | None = None  # points a model gets without doing the task (see analysis.chance_line)
    chance_label: str | None = None  # "chance 1/3" or "majority class 55%" (imbalanced gold labels)
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
class ComparisonData:
    """Everything :func:`jbench.compare.compare_runs` found; :class:`jbench.compare.ComparisonReport` adds the
    renderers (markdown, HTML, PNG)."""

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
