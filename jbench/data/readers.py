"""Format readers and per-dataset normalizers.

Two stages, so each error can name the exact place it comes from:

1. ``read_records(format, bytes, where)`` parses a file into ``(location, record)`` pairs in native file order
   (``location`` is ``path:line`` or a JSON path), failing on empty/truncated/non-JSON input.
2. ``normalize(reader, records)`` checks each record's schema and returns the docs in exactly the shape the
   reference harness sees from its HF loader (``shunk031/JGLUE``, ``kumapo/JAQKET``, the XWinograd Hub files).

Nothing is ever skipped silently: the only records dropped are the ones the reference loaders drop themselves
(non-``jp`` XWinograd rows, JAQKET questions without an answer in the first five contexts), and the caller
records those counts.
"""

from __future__ import annotations

import csv
import io
import json
import struct
from collections.abc import Callable, Iterable
from typing import Any

from jbench.errors import DataError

Record = tuple[str, Any]

JNLI_LABELS = ("entailment", "contradiction", "neutral")  # HF ClassLabel order
MARC_LABELS = ("positive", "negative")  # HF ClassLabel ["positive","negative","neutral"], is_pos_neg=True
JCQA_CHOICES = 5
JAQKET_NUM_CONTEXTS = 5  # kumapo/JAQKET v2.0 config default; JP-stable passes num_contexts=5 as well
XWINOGRAD_COLUMNS = 7


# --------------------------------------------------------------------------------------------------- errors


def _fix_for(where: str) -> str:
    return f"re-download or re-create {where.split(':')[0]} (e.g. `jbench data --download NAME --force`)"


def schema_error(loc: str, problem: str, expected: str) -> DataError:
    """A record that parses but has the wrong shape: say which field and where."""
    return DataError(f"wrong record schema: {problem}", where=loc,
                     fix=f"expected {expected}; is this the right file for this dataset?")


# ------------------------------------------------------------------------------------------- format readers


def _decode(data: bytes, where: str) -> str:
    """UTF-8 text or a clear error: every upstream file is UTF-8 without BOM."""
    if not data:
        raise DataError("data file is empty (0 bytes)", where=where, fix=_fix_for(where))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.end == len(data) and "unexpected end" in err.reason:
            raise DataError("file is truncated: it ends inside a UTF-8 character", where=where,
                            fix=_fix_for(where)) from err
        raise DataError(f"data file is not UTF-8 text (bad byte at offset {err.start})", where=where,
                        fix=_fix_for(where)) from err
    return text.removeprefix("\ufeff")


def read_jsonl(data: bytes, where: str) -> list[Record]:
    """JSON lines, one object per line, like the HF loaders' ``for line in f: json.loads(line)``."""
    text = _decode(data, where)
    lines = text.split("\n")
    complete = lines[-1] == ""
    if complete:
        lines.pop()
    records: list[Record] = []
    for lineno, line in enumerate(lines, start=1):
        loc = f"{where}:{lineno}"
        if not line.strip():
            raise DataError("blank line in a JSON-lines file (the reference loader would fail on it)", where=loc,
                            fix=_fix_for(where))
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines) and not complete:
                raise DataError(f"file is truncated: the last line is incomplete JSON ({err.msg})", where=loc,
                                fix=_fix_for(where)) from err
            raise DataError(f"not valid JSON ({err.msg} at column {err.colno})", where=loc,
                            fix=_fix_for(where)) from err
        except (ValueError, RecursionError) as err:  # a number over the int-string limit, absurd nesting
            raise DataError(f"unreadable JSON ({_json_limit(err)})", where=loc, fix=_fix_for(where)) from err
        if not isinstance(obj, dict):
            raise schema_error(loc, f"line holds a JSON {type(obj).__name__}, not an object", "one JSON object "
                               "per line")
        records.append((loc, obj))
    return records


def _load_json_document(data: bytes, where: str) -> Any:
    """A whole-file JSON document; a parse error at the very end means the file was cut short."""
    text = _decode(data, where)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        if not isinstance(err, json.JSONDecodeError):
            raise DataError(f"unreadable JSON ({_json_limit(err)})", where=where, fix=_fix_for(where)) from err
        loc = f"{where}:{err.lineno}:{err.colno}"
        stripped = text.rstrip()
        if err.pos >= len(stripped) or not stripped.endswith(("}", "]")):  # a document that stops mid-way
            raise DataError(f"file is truncated: JSON ends early ({err.msg})", where=loc,
                            fix=_fix_for(where)) from err
        raise DataError(f"not valid JSON ({err.msg})", where=loc, fix=_fix_for(where)) from err


def _json_limit(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(";")[0]


def read_parquet(data: bytes, where: str) -> list[Record]:
    """An HF parquet export, rows in stored order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not data:
        raise DataError("data file is empty (0 bytes)", where=where, fix=_fix_for(where))
    try:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"not a readable parquet file ({err})", where=where, fix=_fix_for(where)) from err
    return [(f"{where}: row {i}", row) for i, row in enumerate(rows)]


def read_squad_json(data: bytes, where: str) -> list[Record]:
    """Flatten SQuAD-v1 nested JSON in article -> paragraph -> qas order, exactly as shunk031/JGLUE does."""
    doc = _load_json_document(data, where)
    expected = '{"data": [{"title", "paragraphs": [{"context", "qas": [{"question", "id", "answers"}]}]}]}'
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise schema_error(where, "top level is not {\"data\": [...]}", expected)
    records: list[Record] = []
    for i, article in enumerate(doc["data"]):
        aloc = f"{where}: data[{i}]"
        title = _field(article, "title", str, aloc, expected)
        for j, para in enumerate(_field(article, "paragraphs", list, aloc, expected)):
            ploc = f"{aloc}.paragraphs[{j}]"
            context = _field(para, "context", str, ploc, expected)
            for k, qa in enumerate(_field(para, "qas", list, ploc, expected)):
                qloc = f"{ploc}.qas[{k}]"
                if not isinstance(qa, dict):
                    raise schema_error(qloc, "qa entry is not an object", expected)
                records.append((qloc, {
                    "id": qa.get("id"), "title": title, "context": context, "question": qa.get("question"),
                    "answers": qa.get("answers"), "is_impossible": qa.get("is_impossible", False),
                }))
    return records


def read_xwinograd_tsv(data: bytes, where: str) -> list[Record]:
    """The upstream XWINO TSV: 7 tab-separated columns, no header, no quoting (``QUOTE_NONE``), so every
    physical line is one row."""
    text = _decode(data, where)
    lines = text.split("\n")
    complete = lines[-1] == ""
    if complete:
        lines.pop()
    records: list[Record] = []
    for lineno, line in enumerate(lines, start=1):
        loc = f"{where}:{lineno}"
        row = line.removesuffix("\r").split("\t")
        if len(row) != XWINOGRAD_COLUMNS:
            if lineno == len(lines) and not complete and len(row) < XWINOGRAD_COLUMNS:
                raise DataError(f"file is truncated: last row has {len(row)} of {XWINOGRAD_COLUMNS} columns",
                                where=loc, fix=_fix_for(where))
            raise schema_error(loc, f"row has {len(row)} tab-separated columns", f"{XWINOGRAD_COLUMNS} columns "
                               "(lang, source, english, sentence, tokens, pronoun, candidates)")
        records.append((loc, row))
    return records


def read_jaqket_json(data: bytes, where: str) -> list[Record]:
    """kumapo/JAQKET v2.0 input: its loader does ``json.load`` on a JSON array; JSON lines are accepted too."""
    text = _decode(data, where)
    if text.lstrip().startswith("["):
        doc = _load_json_document(data, where)
        return [(f"{where}: item {i}", obj) for i, obj in enumerate(doc)]
    return read_jsonl(data, where)


def read_id_list(data: bytes, where: str) -> list[str]:
    """JGLUE ``filter_review_id_list``: one review id per line (read with ``line.rstrip()`` like the loader)."""
    text = _decode(data, where)
    ids = [line.rstrip() for line in text.splitlines()]
    if any(not i for i in ids):
        raise DataError("blank line in a review-id list", where=where, fix=_fix_for(where))
    return ids


def read_label_conv(data: bytes, where: str) -> dict[str, str]:
    """JGLUE ``label_conv_review_id_list``: CSV ``review_id,new_label``."""
    text = _decode(data, where)
    conv: dict[str, str] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if len(row) != 2 or row[1] not in MARC_LABELS:
                raise schema_error(f"{where}:{reader.line_num}", f"row {row!r:.80}", "`review_id,positive|negative`")
            conv[row[0]] = row[1]
    except csv.Error as err:
        raise DataError(f"not a valid CSV file ({err})", where=f"{where}:{reader.line_num}",
                        fix=_fix_for(where)) from err
    return conv


_FORMAT_READERS: dict[str, Callable[[bytes, str], list[Record]]] = {
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "squad_json": read_squad_json,
    "xwinograd_tsv": read_xwinograd_tsv,
    "jaqket_json": read_jaqket_json,
}


def read_records(fmt: str, data: bytes, where: str) -> list[Record]:
    """Parse ``data`` (the bytes of ``where``) in format ``fmt`` into located records, native order."""
    try:
        reader = _FORMAT_READERS[fmt]
    except KeyError:
        raise DataError(f"unknown data format {fmt!r}", where=where,
                        fix=f"use one of {sorted(_FORMAT_READERS)}") from None
    return reader(data, where)


# ------------------------------------------------------------------------------------------ field helpers


def _field(rec: Any, name: str, typ: type | tuple[type, ...], loc: str, expected: str) -> Any:
    """``rec[name]`` checked for presence and type (``bool`` never passes as ``int``)."""
    if not isinstance(rec, dict):
        raise schema_error(loc, f"record is a {type(rec).__name__}, not an object", expected)
    if name not in rec:
        raise schema_error(loc, f"record is missing field {name!r}", expected)
    value = rec[name]
    types = typ if isinstance(typ, tuple) else (typ,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise schema_error(loc, f"field {name!r} is {type(value).__name__} {value!r:.60}", expected)
    return value


def _string_id(rec: dict[str, Any], name: str, loc: str, expected: str) -> str:
    """An id feature declared ``Value("string")`` upstream: HF casts ints to str, so we do too."""
    return str(_field(rec, name, (str, int), loc, expected))


def _class_label(value: Any, names: tuple[str, ...], loc: str, field_name: str, expected: str) -> int:
    """Map a ClassLabel given as name or int to its index, like HF ``ClassLabel.encode_example``."""
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    raise schema_error(loc, f"field {field_name!r} has value {value!r}", expected)


# ----------------------------------------------------------------------------------------------- datasets


def normalize_jcommonsenseqa(records: Iterable[Record]) -> list[dict[str, Any]]:
    """``{q_id:int, question, choice0..choice4, label:int}``."""
    expected = "{q_id: int, question: str, choice0..choice4: str, label: int 0-4}"
    docs = []
    for loc, rec in records:
        doc: dict[str, Any] = {"q_id": _field(rec, "q_id", int, loc, expected),
                               "question": _field(rec, "question", str, loc, expected)}
        for i in range(JCQA_CHOICES):
            doc[f"choice{i}"] = _field(rec, f"choice{i}", str, loc, expected)
        label = _field(rec, "label", (int, str), loc, expected)
        names = tuple(f"choice{i}" for i in range(JCQA_CHOICES))
        doc["label"] = _class_label(label, names, loc, "label", expected)
        docs.append(doc)
    return docs


def normalize_jnli(records: Iterable[Record]) -> list[dict[str, Any]]:
    """``{sentence_pair_id, yjcaptions_id, sentence1, sentence2, label:int}``, label per HF ClassLabel order."""
    expected = ("{sentence_pair_id, yjcaptions_id, sentence1, sentence2, label: entailment|contradiction|neutral "
                "or 0-2}")
    docs = []
    for loc, rec in records:
        docs.append({
            "sentence_pair_id": _string_id(rec, "sentence_pair_id", loc, expected),
            "yjcaptions_id": _string_id(rec, "yjcaptions_id", loc, expected),
            "sentence1": _field(rec, "sentence1", str, loc, expected),
            "sentence2": _field(rec, "sentence2", str, loc, expected),
            "label": _class_label(_field(rec, "label", (str, int), loc, expected), JNLI_LABELS, loc, "label",
                                  expected),
        })
    return docs


def _columnar_answers(value: Any, loc: str, expected: str) -> dict[str, list[Any]]:
    """SQuAD answers as HF ``Sequence({text, answer_start})`` yields them: a dict of parallel lists."""
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
    elif isinstance(value, list):
        if not all(isinstance(a, dict) and "text" in a and "answer_start" in a for a in value):
            raise schema_error(loc, "an answer lacks 'text' or 'answer_start'", expected)
        texts, starts = [a["text"] for a in value], [a["answer_start"] for a in value]
    else:
        raise schema_error(loc, f"field 'answers' is {type(value).__name__}", expected)
    if (not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts) or not texts
            or not all(isinstance(t, str) for t in texts)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in starts)):
        raise schema_error(loc, f"field 'answers' is malformed: {value!r:.80}", expected)
    return {"text": list(texts), "answer_start": list(starts)}


def normalize_jsquad(records: Iterable[Record]) -> list[dict[str, Any]]:
    """``{id, title, context, question, answers: {text: [...], answer_start: [...]}, is_impossible}``.

    ``is_impossible`` is kept because shunk031/JGLUE yields it (always false in JSQuAD)."""
    expected = "{id, title, context, question, answers: [{text, answer_start}] or {text: [], answer_start: []}}"
    docs = []
    for loc, rec in records:
        impossible = rec.get("is_impossible", False) if isinstance(rec, dict) else False
        docs.append({
            "id": _field(rec, "id", str, loc, expected),
            "title": _field(rec, "title", str, loc, expected),
            "context": _field(rec, "context", str, loc, expected),
            "question": _field(rec, "question", str, loc, expected),
            "answers": _columnar_answers(_field(rec, "answers", (list, dict), loc, expected), loc, expected),
            "is_impossible": bool(impossible),
        })
    return docs


def normalize_marc_ja(records: Iterable[Record]) -> list[dict[str, Any]]:
    """``{review_id, sentence, label:int}`` with 0=positive, 1=negative."""
    expected = "{sentence: str, label: positive|negative or 0|1, review_id: str}"
    docs = []
    for loc, rec in records:
        docs.append({
            "review_id": _string_id(rec, "review_id", loc, expected),
            "sentence": _field(rec, "sentence", str, loc, expected),
            "label": _class_label(_field(rec, "label", (str, int), loc, expected), MARC_LABELS, loc, "label",
                                  expected),
        })
    return docs


def apply_marc_id_lists(docs: list[dict[str, Any]], filter_ids: Iterable[str],
                        conv: dict[str, str]) -> tuple[list[dict[str, Any]], int, int]:
    """JGLUE's validation post-processing: drop filtered review ids, then override labels.

    Returns (docs, dropped, relabelled) where ``relabelled`` counts labels that actually changed, so an
    already-processed file reports 0 and 0."""
    drop = set(filter_ids)
    kept = [d for d in docs if d["review_id"] not in drop]
    relabelled = 0
    out = []
    for doc in kept:
        new = conv.get(doc["review_id"])
        if new is not None and MARC_LABELS.index(new) != doc["label"]:
            doc = {**doc, "label": MARC_LABELS.index(new)}
            relabelled += 1
        out.append(doc)
    return out, len(docs) - len(kept), relabelled


def _xwinograd_from_tsv(loc: str, row: list[str]) -> dict[str, str]:
    """Build ``{sentence1, sentence2, answer}`` from one upstream ``jp`` row.

    Follows Muennighoff's ``raw_data/convert_tsv.py`` (the Hub conversion): it locates the pronoun token in the
    raw sentence by walking the token list and swaps it for each candidate's text; Japanese tokens concatenate
    to the raw sentence with no spaces (checked here; true for all 959 rows), so this is a token-span
    substitution. The Hub files then put the correct option at a *random* position (``random.choice([1, 2])``)
    and derive ``sentence1/2`` from ``sentence.replace("_", option)``; here candidate order is kept, so
    ``answer`` is "1" iff the first candidate is correct. Byte equality with the Hub files is unverified."""
    expected = "jp row with JSON tokens, pronoun [text,[start,end],tokens], 2 candidates [text,[s,e],tokens,bool]"
    sentence = row[3]
    try:
        tokens, pronoun, candidates = json.loads(row[4]), json.loads(row[5]), json.loads(row[6])
    except (ValueError, RecursionError) as err:
        msg = err.msg if isinstance(err, json.JSONDecodeError) else _json_limit(err)
        raise DataError(f"not valid JSON in a token/pronoun/candidate column ({msg})", where=loc,
                        fix=_fix_for(loc)) from err
    try:
        start, end = (int(x) for x in pronoun[1])
        cands = [(str(c[0]), bool(c[3])) for c in candidates]
        ok = (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens) and 0 <= start < end
              <= len(tokens) and len(cands) == 2 and sum(correct for _, correct in cands) == 1)
    except (TypeError, ValueError, LookupError, OverflowError):
        ok = False
    if not ok:
        raise schema_error(loc, "malformed tokens/pronoun/candidates", expected)
    if "".join(tokens) != sentence:
        raise schema_error(loc, "tokens do not concatenate to the sentence, so the pronoun cannot be located",
                           expected)
    before, after = "".join(tokens[:start]), "".join(tokens[end:])
    return {"sentence1": before + cands[0][0] + after, "sentence2": before + cands[1][0] + after,
            "answer": "1" if cands[0][1] else "2"}


def _xwinograd_from_hub(loc: str, rec: dict[str, Any]) -> dict[str, str]:
    """Hub forms: Stability ``{sentence1, sentence2, answer}`` or Muennighoff ``{sentence, option1, option2,
    answer}`` with a ``_`` placeholder."""
    expected = "{sentence1, sentence2, answer: 1|2} or {sentence (with _), option1, option2, answer: 1|2}"
    answer = str(_field(rec, "answer", (str, int), loc, expected))
    if answer not in ("1", "2"):
        raise schema_error(loc, f"field 'answer' has value {answer!r}", expected)
    if "sentence1" in rec or "sentence" not in rec:
        return {"sentence1": _field(rec, "sentence1", str, loc, expected),
                "sentence2": _field(rec, "sentence2", str, loc, expected), "answer": answer}
    sentence = _field(rec, "sentence", str, loc, expected)
    if sentence.count("_") != 1:
        raise schema_error(loc, "field 'sentence' must contain exactly one '_' placeholder", expected)
    return {"sentence1": sentence.replace("_", _field(rec, "option1", str, loc, expected)),
            "sentence2": sentence.replace("_", _field(rec, "option2", str, loc, expected)), "answer": answer}


def normalize_xwinograd_ja(records: Iterable[Record]) -> list[dict[str, Any]]:
    """``{sentence1, sentence2, answer: "1"|"2"}``; from the TSV only ``jp`` rows are kept, in file order."""
    docs = []
    for loc, rec in records:
        if isinstance(rec, list):
            if rec[0] == "jp":
                docs.append(_xwinograd_from_tsv(loc, rec))
        else:
            docs.append(_xwinograd_from_hub(loc, rec))
    return docs


def _score(value: Any, loc: str, expected: str) -> float:
    """``float(ctx["score"])`` (DPR writes scores as strings), rounded like an HF ``Value("float32")``."""
    try:
        return struct.unpack("f", struct.pack("f", float(value)))[0]
    except (TypeError, ValueError, OverflowError):
        raise schema_error(loc, f"field 'score' is not a number: {value!r:.40}", expected) from None


def normalize_jaqket_v2(records: Iterable[Record]) -> list[dict[str, Any]]:
    """kumapo/JAQKET v2.0 ``_generate_examples_v2``: first 5 ctxs, skip questions whose first 5 ctxs have no
    ``has_answer``; features as HF ``Sequence`` dicts of lists."""
    expected = "{qid, question, answers: [str], ctxs: [{id, title, text, score, has_answer}]}"
    docs = []
    for loc, rec in records:
        qid = _string_id(rec, "qid", loc, expected)
        question = _field(rec, "question", str, loc, expected)
        answers = _field(rec, "answers", list, loc, expected)
        if not all(isinstance(a, str) for a in answers):
            raise schema_error(loc, "field 'answers' must be a list of strings", expected)
        ctxs = _field(rec, "ctxs", list, loc, expected)[:JAQKET_NUM_CONTEXTS]
        for i, ctx in enumerate(ctxs):
            for name, typ in (("id", (str, int)), ("title", str), ("text", str), ("score", (int, float, str)),
                              ("has_answer", (bool, int))):
                _field(ctx, name, typ, f"{loc} ctxs[{i}]", expected)
        if True not in [c["has_answer"] for c in ctxs]:  # the loader's own test, kept verbatim
            continue
        docs.append({
            "qid": qid,
            "question": question,
            "answers": {"text": list(answers), "answer_start": [-1] * len(answers)},
            "ctxs": {
                "id": [str(c["id"]) for c in ctxs],
                "title": [c["title"] for c in ctxs],
                "text": [c["text"] for c in ctxs],
                "score": [_score(c["score"], f"{loc} ctxs[{i}]", expected) for i, c in enumerate(ctxs)],
                "has_answer": [bool(c["has_answer"]) for c in ctxs],
            },
        })
    return docs


NORMALIZERS: dict[str, Callable[[Iterable[Record]], list[dict[str, Any]]]] = {
    "jcommonsenseqa": normalize_jcommonsenseqa,
    "jnli": normalize_jnli,
    "jsquad": normalize_jsquad,
    "marc_ja": normalize_marc_ja,
    "xwinograd_ja": normalize_xwinograd_ja,
    "jaqket_v2": normalize_jaqket_v2,
}


def normalize(reader: str, records: Iterable[Record]) -> list[dict[str, Any]]:
    """Normalized docs for dataset reader id ``reader`` (see ``DatasetSpec.reader``)."""
    return NORMALIZERS[reader](records)
