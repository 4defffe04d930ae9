"""Rendering a task's templates for one document, and assembling few-shot contexts (spec §1.3).

``ctx = description + FEWSHOT_SEP.join(doc_to_text(shot) + target(shot) for shot in shots) + FEWSHOT_SEP
+ doc_to_text(doc)``; the description is included even at 0-shot and the target follows the text with no
separator. Templates are Jinja2 with the doc's fields, the task's ``vars``, ``derived`` expressions,
``choices``/``gold``, ``system_prompt`` and ``native_index`` in scope.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import jinja2

from jbench.errors import TaskError
from jbench.tasks import TaskSpec

# JP-stable HEAD default (a759835, 2023-11-09); the env var overrides it exactly as in the reference.
DEFAULT_SYSTEM_PROMPT = "あなたは役立つアシスタントです。"


def system_prompt(task: TaskSpec | None = None) -> str:
    """``$SYSTEM_PROMPT`` if set (even to ""), else the default of the era ``task`` follows (HEAD's otherwise).

    The reference reads ``os.getenv("SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT)`` per class, so an override applies
    to every era alike, while the default depends on the commit the task version comes from: a task version that
    only existed before a759835 (jnli-1.1-0.6) names Llama-2's English default in its YAML.
    """
    default = task.default_system_prompt if task is not None else None
    return os.environ.get("SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT if default is None else default)


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False, trim_blocks=False,
    lstrip_blocks=False,
)


@lru_cache(maxsize=1024)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@lru_cache(maxsize=1024)
def _expression(source: str) -> Callable[..., Any]:
    return _ENV.compile_expression(source, undefined_to_none=False)


@dataclass(frozen=True)
class RenderedDoc:
    """One document seen through one task: its id, prompt text, few-shot target, and what gets scored."""

    doc_id: str
    text: str
    target: str
    choices: list[str] | None
    gold: int | None
    golds: list[str] | None


def _scope(task: TaskSpec, doc: dict[str, Any], native_index: int) -> dict[str, Any]:
    scope: dict[str, Any] = {**doc, **task.vars, "system_prompt": system_prompt(task),
                             "native_index": native_index}
    for key, expr in task.derived.items():
        scope[key] = _expression(expr)(**scope)
    if task.choices is not None:
        scope["choices"] = list(_expression(task.choices)(**scope))
        scope["gold"] = int(_expression(task.gold or "None")(**scope))
    if task.golds is not None:
        scope["golds"] = list(_expression(task.golds)(**scope))
    return scope


def render_doc(task: TaskSpec, doc: dict[str, Any], native_index: int = 0) -> RenderedDoc:
    """Render every per-document template; errors name the task and the failing field."""
    try:
        scope = _scope(task, doc, native_index)
        return RenderedDoc(
            doc_id=_template(task.doc_id).render(scope),
            text=_template(task.doc_to_text).render(scope),
            target=_template(task.target).render(scope),
            choices=scope.get("choices"),
            gold=scope.get("gold"),
            golds=scope.get("golds"),
        )
    except (jinja2.TemplateError, KeyError, TypeError, ValueError, IndexError) as err:
        raise TaskError(
            f"cannot render task {task.name} for a document: {type(err).__name__}: {err}",
            where=f"tasks/{task.source}; document fields: {sorted(doc)}",
            fix="check that the data file has the schema this task expects (see `jbench data`)",
        ) from err


def render_description(task: TaskSpec) -> str:
    scope = {**task.vars, "system_prompt": system_prompt(task)}
    return _template(task.description).render(scope)


def fewshot_context(task: TaskSpec, doc_text: str, shots: Sequence[RenderedDoc]) -> str:
    """The reference ``Task.fewshot_context`` (shots already drawn)."""
    sep = task.fewshot_sep
    labeled = sep.join(s.text + s.target for s in shots) + sep if shots else ""
    return render_description(task) + labeled + doc_text
