"""Chat-template prompts (``--apply-chat-template``), built the way lm-eval 0.4.13 builds them.

Why: a chat model with no reference prompt version would otherwise get the Alpaca-style 0.3 prompt as plain
text. lm-eval users expect ``--apply_chat_template`` / ``--system_instruction`` / ``--fewshot_as_multiturn``, so
jbench renders its own task texts through the tokenizer's chat template with lm-eval's rules
(``lm_eval/api/task.py`` ``fewshot_context`` / ``build_qa_turn``, ``api/utils.py`` ``multiturn_to_singleturn``,
``models/huggingface.py`` ``apply_chat_template``):

* **system turn**: the system instruction and the task description, joined by the task's few-shot separator
  unless either side already has whitespace there (lm-eval's ``maybe_delimit``); no system turn if both are empty.
* **shots**: with ``fewshot_as_multiturn`` (lm-eval's default once a chat template is on) each shot is a user turn
  (its text) and an assistant turn (its target). Without it, the shots and the question are one user turn whose
  text is exactly the plain prompt's (shots joined by the separator), minus the description.
* **question**: a user turn; the template's generation prompt (``add_generation_prompt=True``) opens the assistant
  turn and the continuation is scored right after it. jbench's targets carry no separate target delimiter, so the
  continuations are the task's own strings (lm-eval drops its delimiter under a chat template, with the same result).
* **a template that refuses a system turn** (it raises, as Gemma's does): rendered again without the system turn
  and a warning logged -- lm-eval's fallback. The system instruction and the description are then not in the prompt;
  every such request says so in its notes.
* **generation**: the output is also cut at the tokenizer's EOS text (lm-eval adds EOS to ``until``).

Token ids: the rendered text is encoded with jbench's rule (``encode`` adds no special tokens; a BOS the template
writes is in the text). lm-eval instead encodes context + continuation together and splits, which can differ at the
boundary token. Task names carry :data:`CHAT_SUFFIX` so these numbers are never taken for reference-prompt ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from jbench.errors import ModelError, TaskError
from jbench.prompts import RenderedDoc, render_description
from jbench.tasks import TaskSpec

if TYPE_CHECKING:
    from jbench.errors import JBenchError

log = logging.getLogger(__name__)

#: appended to every task name of a chat-template run (results, tables, samples files)
CHAT_SUFFIX = "+chat"
#: appended to the default run name of a chat-template run (``-chat-<hash>`` for non-default chat settings,
#: see :func:`jbench.run_identity.chat_tag`)
RUN_NAME_SUFFIX = "-chat"
SYSTEM_DROPPED = ("the chat template has no system role: the system turn (system instruction and task description) "
                  "was left out, as lm-eval does")
_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass(frozen=True)
class ChatOptions:
    """What the user asked for (stored in the run plan): lm-eval's ``system_instruction`` and
    ``fewshot_as_multiturn`` (True by default once a chat template is applied, as in lm-eval 0.4.13)."""

    system_instruction: str | None = None
    fewshot_as_multiturn: bool = True


def resolve_chat_options(apply: bool | None, system_instruction: str | None, multiturn: bool | None,
                         *, preset_default: bool = False) -> tuple[ChatOptions | None, list["JBenchError"]]:
    """The chat options of a run (None: plain reference prompts) and the problems in the flags.

    ``apply`` None means "the preset decides" (``preset_default``). As in lm-eval, ``--fewshot-as-multiturn``
    needs a chat template; ``--system-instruction`` does too (lm-eval would prepend it to the plain prompt, which
    would silently change a reference prompt), and so does ``--no-fewshot-as-multiturn``: a setting that cannot
    apply is refused, never silently dropped."""
    on = preset_default if apply is None else bool(apply)
    problems: list[JBenchError] = []
    if not on:
        if multiturn is not None:
            flag = "--fewshot-as-multiturn" if multiturn else "--no-fewshot-as-multiturn"
            why = ("as in lm-eval: \"When fewshot_as_multiturn is True, apply_chat_template must be set\"" if multiturn
                   else "it lays the shots out in chat turns; without a chat template it would be silently ignored")
            problems.append(TaskError(f"{flag} needs --apply-chat-template ({why})", where=flag,
                                      fix=f"add --apply-chat-template, or drop {flag}"))
        if system_instruction is not None:
            problems.append(TaskError("--system-instruction needs --apply-chat-template (jbench never edits a "
                                      "reference prompt)", where="--system-instruction",
                                      fix="add --apply-chat-template, or drop --system-instruction"))
        return None, problems
    return ChatOptions(system_instruction, True if multiturn is None else bool(multiturn)), problems


# ---------------------------------------------------------------------------------------------------------------
# finding and rendering a template
# ---------------------------------------------------------------------------------------------------------------


def _pick(value: Any) -> str | None:
    """A template from a config value: a string, or lm-eval/transformers' named list/dict (its "default")."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        value = {d.get("name"): d.get("template") for d in value if isinstance(d, dict)}
    if isinstance(value, dict):
        found = value.get("default")
        return found if isinstance(found, str) and found.strip() else None
    return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def template_in_dir(directory: str | Path) -> str | None:
    """The chat template a model folder ships: ``chat_template.jinja``, ``tokenizer_config.json``'s
    ``chat_template`` or ``chat_template.json`` (the places transformers reads); None if it has none."""
    d = Path(directory)
    jinja = d / "chat_template.jinja"
    if jinja.is_file():
        try:
            return _pick(jinja.read_text(encoding="utf-8"))
        except OSError:
            return None
    return _pick(_json(d / "tokenizer_config.json").get("chat_template")) or _pick(
        _json(d / "chat_template.json").get("chat_template"))


def _special_strings(directory: Path) -> dict[str, str]:
    """bos_token / eos_token / ... as strings, from a folder's config files (special_tokens_map.json wins)."""
    out: dict[str, str] = {}
    for src in (_json(directory / "tokenizer_config.json"), _json(directory / "special_tokens_map.json")):
        for name in _SPECIAL_NAMES:
            value = src.get(name)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                out[name] = value
    return out


@dataclass(frozen=True)
class ChatTemplate:
    """A tokenizer's chat template and the special-token strings it may use, rendered as transformers'
    ``apply_chat_template(tokenize=False)`` does."""

    template: str
    specials: dict[str, str]
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[messages], chat_template=self.template,
                                            add_generation_prompt=add_generation_prompt, **self.specials)
        return str(rendered[0])


def find_template(tokenizer: Any) -> ChatTemplate | None:
    """The chat template of a harness tokenizer: the HF tokenizer's own, else (sentencepiece path, which has no HF
    object) the one in the folder of its ``.model`` file; None when the model has none."""
    hf = getattr(tokenizer, "tok", None)
    if hf is not None:
        template = _pick(getattr(hf, "chat_template", None))
        specials = {k: v for k, v in (getattr(hf, "special_tokens_map", None) or {}).items() if isinstance(v, str)}
        source = str(getattr(tokenizer, "name_or_path", "") or getattr(hf, "name_or_path", ""))
        return ChatTemplate(template, specials, source) if template else None
    model_file = getattr(tokenizer, "model_file", None)
    if model_file:
        directory = Path(model_file).parent
        template = template_in_dir(directory)
        return ChatTemplate(template, _special_strings(directory), str(directory)) if template else None
    template = _pick(getattr(tokenizer, "chat_template", None))
    return ChatTemplate(template, {}, str(getattr(tokenizer, "name_or_path", ""))) if template else None


def no_template_error(where: str) -> ModelError:
    return ModelError("--apply-chat-template: the model's tokenizer has no chat template", where=where,
                      fix="drop --apply-chat-template (the task's reference prompt is used), or use a chat model "
                          "whose tokenizer_config.json (or chat_template.jinja) has a chat_template")


def check_chat(plan: Any) -> list["JBenchError"]:
    """Before any weights load: a chat run on a model that visibly has no chat template (the embedded tiny model,
    a local folder without one). Hub ids and .gguf files are checked when the tokenizer loads."""
    if not getattr(plan, "chat", None):
        return []
    model = plan.model.get("model")
    if model in (None, "tiny"):
        return [ModelError("--apply-chat-template: the embedded tiny model has no chat template", where="--model tiny",
                           fix="pass --model with a chat model's folder, or drop --apply-chat-template")]
    extra = plan.model.get("extra") or {}
    path = Path(str(extra.get("tokenizer") or model)).expanduser()
    if path.is_dir() and (path / "config.json").is_file() and template_in_dir(path) is None:
        return [no_template_error(str(model))]
    return []


# ---------------------------------------------------------------------------------------------------------------
# building prompts
# ---------------------------------------------------------------------------------------------------------------


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    """lm-eval's ``maybe_delimit``: join with ``delimiter`` unless either side has whitespace at the joint."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    return prefix + suffix if prefix[-1].isspace() or suffix[0].isspace() else prefix + delimiter + suffix


@dataclass
class ChatPrompt:
    """Renders one request's context through a chat template (see the module docstring for the rules)."""

    template: ChatTemplate
    options: ChatOptions
    eos_text: str | None = None
    _warned: bool = field(default=False, repr=False)

    def rename(self, task: TaskSpec) -> TaskSpec:
        """The task under its chat name (``jcommonsenseqa-1.1-0.3+chat``), so results never pass for reference ones."""
        return task if task.name.endswith(CHAT_SUFFIX) else replace(task, name=task.name + CHAT_SUFFIX)

    def messages(self, task: TaskSpec, doc_text: str, shots: Sequence[RenderedDoc]) -> list[dict[str, str]]:
        """lm-eval's message list for one request (before the template)."""
        sep = task.fewshot_sep
        system = maybe_delimit(self.options.system_instruction, render_description(task), sep)
        out = [{"role": "system", "content": system}] if system else []
        if self.options.fewshot_as_multiturn:
            for s in shots:
                out += [{"role": "user", "content": s.text}, {"role": "assistant", "content": s.target}]
            return out + [{"role": "user", "content": doc_text}]
        return out + [{"role": "user", "content": "".join(s.text + s.target + sep for s in shots) + doc_text}]

    def context(self, task: TaskSpec, doc_text: str, shots: Sequence[RenderedDoc]) -> tuple[str, list[str]]:
        """(rendered context, notes): the template's text up to and including the opened assistant turn."""
        import jinja2

        msgs = self.messages(task, doc_text, shots)
        try:
            return self.template.render(msgs), []
        except jinja2.TemplateError as err:
            if not any(m["role"] == "system" for m in msgs):
                raise ModelError(f"the chat template fails on {task.name}: {err}", where=self.template.source,
                                 fix="check the model's chat_template, or drop --apply-chat-template") from err
            if not self._warned:
                log.warning("failed to apply the chat template (%s); removing the system role, as lm-eval does", err)
                self._warned = True
            try:
                return self.template.render([m for m in msgs if m["role"] != "system"]), [SYSTEM_DROPPED]
            except jinja2.TemplateError as err2:
                raise ModelError(f"the chat template fails on {task.name}: {err2}", where=self.template.source,
                                 fix="check the model's chat_template, or drop --apply-chat-template") from err2

    def run_notes(self, insts: Sequence[Any]) -> list[str]:
        """The run-level note when some request lost its system turn (the template has no system role)."""
        return [SYSTEM_DROPPED] if any(SYSTEM_DROPPED in i.notes for i in insts) else []

    def cut(self, text: str) -> str:
        """A generated answer cut at the EOS text (lm-eval stops at EOS as well as at ``until``)."""
        return text.split(self.eos_text)[0] if self.eos_text else text

    def record(self) -> dict[str, Any]:
        """What goes into results.json ``config`` (and the request-cache key), under lm-eval's names:
        ``chat_template`` (the template text), ``chat_template_sha``, ``system_instruction``,
        ``fewshot_as_multiturn``; plus ``chat_task_suffix`` and where the template came from."""
        return {"chat_template": self.template.template, "chat_template_sha": self.template.sha256,
                **asdict(self.options), "chat_task_suffix": CHAT_SUFFIX,
                "chat_template_source": self.template.source}


def chat_prompt(tokenizer: Any, options: ChatOptions, *, where: str) -> ChatPrompt:
    """The chat renderer for a loaded tokenizer; a model without a chat template is a :class:`ModelError`."""
    template = find_template(tokenizer)
    if template is None:
        raise no_template_error(where)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    eos_text = template.specials.get("eos_token")
    if eos_text is None and eos_id is not None:
        eos_text = tokenizer.decode([int(eos_id)]) or None
    return ChatPrompt(template, options, eos_text)
