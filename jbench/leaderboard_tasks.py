"""The ``japanese_leaderboard`` task table and its local data: which tasks exist, which can run offline, and the
JSON-lines data files plus local task YAMLs that let lm-eval run them from jbench's verified data.

Why this module exists: it is the data half of the ``ja_leaderboard`` suite (:mod:`jbench.suites`), apart from
the lm-eval run and the conversion of its output. Preparing tasks needs only jbench's data loader and the
installed lm-eval task folder (no model, no ``simple_evaluate``), so it can be read and tested on its own.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from jbench.data import DATASETS, load_split
from jbench.errors import DataError, TaskError

__all__ = ["JA_LEADERBOARD", "LOCAL_PREFIX", "LeaderboardTask", "PreparedTask", "SUITE_NAME", "available_tasks",
           "leaderboard_dir", "missing_reason", "prepare_tasks", "resolve_tasks", "task_yaml"]

SUITE_NAME = "ja_leaderboard"
#: prefix of the generated local task names (``local_ja_leaderboard_jcommonsenseqa``)
LOCAL_PREFIX = "local_"


@dataclass(frozen=True)
class LeaderboardTask:
    """One ``japanese_leaderboard`` task and where its data comes from locally.

    ``splits`` maps the lm-eval split name (as declared in the task YAML) to the jbench split that supplies it;
    ``shots`` is the YAML's default ``num_fewshot`` (a train split is needed iff > 0). ``dataset=None``: jbench has
    no local source, ``missing`` says why."""

    name: str
    dataset: str | None
    splits: dict[str, str]
    shots: int
    id_field: str | None
    fields: str
    missing: str | None = None

    @property
    def yaml_file(self) -> str:
        return f"{self.name}.yaml"

    @property
    def local_name(self) -> str:
        return LOCAL_PREFIX + self.name


#: In jbench's usual task order (the published averages' order), then the two tasks without local data.
JA_LEADERBOARD: dict[str, LeaderboardTask] = {t.name: t for t in (
    LeaderboardTask("ja_leaderboard_jcommonsenseqa", "jcommonsenseqa",
                    {"train": "train", "validation": "validation"}, 3, "q_id",
                    "question, choice0..choice4 (process_docs builds `choices`), label:int"),
    LeaderboardTask("ja_leaderboard_jnli", "jnli", {"train": "train", "validation": "validation"}, 3,
                    "sentence_pair_id", "sentence1, sentence2, label:int (0 含意 / 1 矛盾 / 2 中立)"),
    LeaderboardTask("ja_leaderboard_marc_ja", "marc_ja", {"train": "train", "validation": "validation"}, 3,
                    "review_id", "sentence, label:int (0 ポジティブ / 1 ネガティブ)"),
    LeaderboardTask("ja_leaderboard_jsquad", "jsquad", {"train": "train", "validation": "validation"}, 2, "id",
                    "context (its '[SEP]' title prefix is cut by the template), question, answers.text[0]"),
    LeaderboardTask("ja_leaderboard_jaqket_v2", "jaqket_v2", {"train": "train", "validation": "validation"}, 1,
                    "qid", "ctxs.text (the 5 kept contexts, joined by newlines), question, answers.text[0]"),
    LeaderboardTask("ja_leaderboard_xwinograd", "xwinograd_ja", {"test": "validation"}, 0, None,
                    "sentence1, sentence2, answer:'1'|'2' (process_docs: label = int(answer) - 1)"),
    LeaderboardTask("ja_leaderboard_mgsm", None, {}, 5, None, "question, answer, answer_number",
                    missing="needs juletxara/mgsm (ja) train/test, which jbench has no local copy or registry "
                            "entry for"),
    LeaderboardTask("ja_leaderboard_xlsum", None, {}, 1, None, "text, summary",
                    missing="needs mkshing/xlsum_ja train/test, which jbench has no local copy or registry entry "
                            "for (its rouge2 also needs lm-eval[japanese_leaderboard]: fugashi, unidic-lite, "
                            "neologdn, emoji)"),
)}

_ALIASES = {"xwinograd_ja": "ja_leaderboard_xwinograd", "jaqket": "ja_leaderboard_jaqket_v2",
            "marc-ja": "ja_leaderboard_marc_ja", "xlsum_ja": "ja_leaderboard_xlsum"}


def leaderboard_dir() -> Path:
    """The installed lm-eval ``japanese_leaderboard`` task folder (the YAMLs the local tasks include)."""
    import lm_eval

    path = Path(lm_eval.__file__).resolve().parent / "tasks" / "japanese_leaderboard"
    if not path.is_dir():
        raise TaskError("this lm-eval has no japanese_leaderboard task folder", where=str(path),
                        fix='install lm-eval >= 0.4.5: pip install "lm-eval[hf]==0.4.13"')
    return path


def resolve_tasks(names: Sequence[str]) -> list[LeaderboardTask]:
    """Leaderboard tasks by lm-eval name (``ja_leaderboard_jnli``), short name (``jnli``) or jbench dataset name
    (``xwinograd_ja``); ``all`` / ``japanese_leaderboard`` means every task. Order is kept, duplicates dropped."""
    out: list[LeaderboardTask] = []
    for raw in names:
        name = raw.strip()
        if name in ("all", "japanese_leaderboard", SUITE_NAME):
            picked = list(JA_LEADERBOARD.values())
        else:
            full = _ALIASES.get(name) or (name if name in JA_LEADERBOARD else f"ja_leaderboard_{name}")
            if full not in JA_LEADERBOARD:
                raise TaskError(f"unknown japanese_leaderboard task {raw!r}",
                                fix=f"use one of: {', '.join(JA_LEADERBOARD)} (or the part after "
                                    "'ja_leaderboard_')")
            picked = [JA_LEADERBOARD[full]]
        out += [t for t in picked if t not in out]
    return out


def _present(dataset: str, split: str, data_dir: Path) -> bool:
    return any((data_dir / fs.relpath).is_file() for fs in DATASETS[dataset].splits[split])


def missing_reason(task: LeaderboardTask, data_dir: Path) -> str | None:
    """Why ``task`` cannot run from ``data_dir`` (None: every split it needs has a file)."""
    if task.dataset is None:
        return task.missing
    need = [s for lm_split, s in task.splits.items() if lm_split != "train" or task.shots > 0]
    absent = [s for s in need if not _present(task.dataset, s, data_dir)]
    if absent:
        return f"no local {task.dataset} {'/'.join(absent)} file in {data_dir} ({DATASETS[task.dataset].how_to_get})"
    return None


def available_tasks(data_dir: Path) -> tuple[list[LeaderboardTask], dict[str, str]]:
    """The leaderboard tasks whose data files are all present, and why each other one is not runnable."""
    ok, skipped = [], {}
    for task in JA_LEADERBOARD.values():
        why = missing_reason(task, Path(data_dir))
        if why is None:
            ok.append(task)
        else:
            skipped[task.name] = why
    return ok, skipped


# ------------------------------------------------------------------------------------------- local task YAMLs


@dataclass
class PreparedTask:
    """A leaderboard task with its data materialized and its local YAML written."""

    task: LeaderboardTask
    yaml_path: Path
    data_files: dict[str, Path]
    #: per-file provenance as jbench records it (``DataFileInfo`` dicts): eval split first, then train
    data: list[dict[str, Any]]
    notes: list[str]


def _write_if_changed(path: Path, data: bytes) -> None:
    """Atomic, and a no-op for identical bytes: a reader (lm-eval's CLI on the same work dir) never sees a
    truncated file, and an unchanged mtime lets ``datasets`` reuse its Arrow cache."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_docs(path: Path, docs: list[dict[str, Any]]) -> None:
    """JSON lines in the loader's order (the json builder keeps file order, so lm-eval's doc ids = jbench's)."""
    _write_if_changed(path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8"))


def _yaml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid YAML flow scalar (paths with odd chars)


def task_yaml(task: LeaderboardTask, include: Path, data_files: dict[str, Path], cache_dir: Path) -> str:
    """The local task: the installed YAML with only the data source replaced (absolute paths: lm-eval resolves
    relative ``data_files`` against the CWD, not the YAML)."""
    lines = [f"include: {_yaml_str(str(include))}", f"task: {task.local_name}", "dataset_path: json",
             "dataset_name: null", "dataset_kwargs:", "  data_files:"]
    lines += [f"    {split}: {_yaml_str(str(p.resolve()))}" for split, p in data_files.items()]
    lines.append(f"  cache_dir: {_yaml_str(str(cache_dir.resolve()))}")
    return "\n".join(lines) + "\n"


def prepare_tasks(tasks: Sequence[LeaderboardTask], data_dir: Path, work_dir: Path, *,
                  allow_mismatch: bool = False) -> list[PreparedTask]:
    """Load (and verify) every split the tasks need, write them as JSON lines under ``work_dir/data`` and the
    local task YAMLs under ``work_dir/tasks`` (the ``--include_path`` for lm-eval, in-process or its CLI).

    The ``datasets`` Arrow cache goes to ``work_dir/hf_datasets`` (set in each YAML), never to ``~/.cache``."""
    include_dir = leaderboard_dir()
    yaml_dir, cache_dir = work_dir / "tasks", work_dir / "hf_datasets"
    yaml_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for task in tasks:
        if task.dataset is None:
            raise DataError(f"{task.name} cannot run offline: {task.missing}",
                            fix="leave it out of --tasks (the default task list skips it)")
        files: dict[str, Path] = {}
        data: list[dict[str, Any]] = []
        notes: list[str] = []
        # eval split first, like jbench's own runs record it
        order = sorted(task.splits.items(), key=lambda kv: kv[0] == "train")
        for lm_split, split in order:
            if lm_split == "train" and task.shots == 0:
                continue
            loaded = load_split(task.dataset, split, data_dir, allow_mismatch=allow_mismatch)
            path = work_dir / "data" / task.name / f"{lm_split}.jsonl"
            _write_docs(path, loaded.docs)
            files[lm_split] = path
            data += [asdict(f) for f in loaded.files]
            notes += [f"{task.name}: {n}" for n in loaded.notes]
        files = {k: files[k] for k in sorted(files, key=lambda k: k != "train")}  # train first in the YAML
        yaml_path = yaml_dir / f"{task.local_name}.yaml"
        _write_if_changed(yaml_path, task_yaml(task, include_dir / task.yaml_file, files, cache_dir).encode("utf-8"))
        out.append(PreparedTask(task, yaml_path, files, data, notes))
    return out
