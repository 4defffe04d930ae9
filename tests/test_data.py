"""The data layer against the real files (JBENCH_DATA_DIR), the bundled sample and small hand-made fixtures."""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jbench.data import (
    DATASETS,
    MANIFEST_NAME,
    DataFileInfo,
    LoadedSplit,
    dataset_status,
    git_blob_sha1,
    load_split,
    resolve_data_dir,
    sample_data_dir,
)
from jbench.errors import DataError

REAL_SPLITS = [("jcommonsenseqa", "train"), ("jcommonsenseqa", "validation"), ("jnli", "validation"),
               ("jsquad", "validation"), ("xwinograd_ja", "validation")]
MARC_VALID = "jglue/marc_ja-v1.1/valid-v1.0.json"
MARC_TRAIN = "jglue/marc_ja-v1.1/train-v1.0.json"
FILTER_LIST = "jglue/marc_ja-v1.1/filter_review_id_list/valid.txt"
CONV_LIST = "jglue/marc_ja-v1.1/label_conv_review_id_list/valid.txt"


# ------------------------------------------------------------------------------------------------ helpers


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def manifest(root: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Declare files in ``root``'s manifest; ``sha256="auto"`` hashes the file as it is now."""
    files = {}
    for rel, e in entries.items():
        sha = hashlib.sha256((root / rel).read_bytes()).hexdigest() if e.get("sha256") == "auto" else e.get("sha256")
        files[rel] = {**e, "sha256": sha}
    (root / MANIFEST_NAME).write_text(json.dumps({"description": "test fixture", "files": files}), encoding="utf-8")


def copy_lists(dst: Path) -> None:
    """JGLUE's MARC-ja id lists: the sample holds byte-identical copies, verified against the official sha256."""
    for rel in (FILTER_LIST, CONV_LIST):
        write(dst, rel, (sample_data_dir() / rel).read_bytes())


def marc_rows(n: int, prefix: str = "RFAKE") -> list[dict[str, Any]]:
    return [{"sentence": f"レビュー{i}です。", "label": "positive" if i % 2 else "negative",
             "review_id": f"{prefix}{i:06d}"} for i in range(n)]


# ------------------------------------------------------------------------------------------ resolve_data_dir


def test_resolve_data_dir_prefers_explicit_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "env"
    other.mkdir()
    monkeypatch.setenv("JBENCH_DATA_DIR", str(other))
    assert resolve_data_dir(tmp_path) == tmp_path
    assert resolve_data_dir(None) == other


def test_resolve_data_dir_without_any_source_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JBENCH_DATA_DIR", raising=False)
    with pytest.raises(DataError) as exc:
        resolve_data_dir(None)
    msg = str(exc.value)
    assert "--data-dir" in msg and "JBENCH_DATA_DIR" in msg and "jbench data --download" in msg


def test_resolve_data_dir_nonexistent(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.parametrize(("dataset", "split"), REAL_SPLITS)
def test_real_file_checksum_and_count(real_data_dir: Path, dataset: str, split: str) -> None:
    loaded = load_split(dataset, split, real_data_dir)
    fs = DATASETS[dataset].splits[split][0]
    [info] = loaded.files
    assert info == DataFileInfo(path=fs.relpath, sha256=fs.sha256 or "", records=fs.records, expected="official",
                                mismatch=None, madeup=False)
    assert len(loaded.docs) == fs.records
    assert loaded.notes == []


def test_real_files_match_their_git_blob_ids(real_data_dir: Path) -> None:
    specs = [fs for d in DATASETS.values() for alts in d.splits.values() for fs in alts] + [
        fs for d in DATASETS.values() for fs in d.aux.values()]
    checked = 0
    for fs in specs:
        path = real_data_dir / fs.relpath
        if fs.git_blob and path.exists():
            data = path.read_bytes()
            assert git_blob_sha1(data) == fs.git_blob, fs.relpath
            if fs.sha256:
                assert hashlib.sha256(data).hexdigest() == fs.sha256
            if fs.size:
                assert len(data) == fs.size
            checked += 1
    assert checked == 7  # 4 JGLUE files, 2 MARC-ja id lists, the XWinograd TSV


def test_real_jcommonsenseqa_first_validation_doc(real_data_dir: Path) -> None:
    docs = load_split("jcommonsenseqa", "validation", real_data_dir).docs
    assert docs[0] == {"q_id": 8939, "question": "電子機器で使用される最も主要な電子回路基板の事をなんと言う？",
                       "choice0": "掲示板", "choice1": "パソコン", "choice2": "マザーボード", "choice3": "ハードディスク",
                       "choice4": "まな板", "label": 2}
    assert collections.Counter(d["label"] for d in docs) == {0: 216, 1: 237, 2: 240, 3: 228, 4: 198}
    train = load_split("jcommonsenseqa", "train", real_data_dir).docs
    assert train[0]["q_id"] == 0 and train[-1]["q_id"] == 8938


def test_real_jnli_label_mapping_and_counts(real_data_dir: Path) -> None:
    docs = load_split("jnli", "validation", real_data_dir).docs
    assert len(docs) == 2434
    assert docs[0] == {"sentence_pair_id": "0", "yjcaptions_id": "10125-11130-11134",
                       "sentence1": "時計がついている場所にパブリックマーケットセンターとかかれた看板が設置されています。",
                       "sentence2": "屋根の上に看板があり時計もついています。", "label": 2}
    assert docs[1]["label"] == 0  # "entailment"
    assert collections.Counter(d["label"] for d in docs) == {2: 1347, 1: 734, 0: 353}  # neutral/contradiction/entailment


def test_real_jsquad_flatten_order(real_data_dir: Path) -> None:
    docs = load_split("jsquad", "validation", real_data_dir).docs
    assert len(docs) == 4442
    assert len(dict.fromkeys(d["title"] for d in docs)) == 59
    first = docs[0]
    assert first["id"] == "a10336p0q0" and first["title"] == "梅雨" and docs[1]["id"] == "a10336p0q1"
    assert first["question"] == "日本で梅雨がないのは北海道とどこか。"
    assert first["context"].startswith("梅雨 [SEP] 梅雨（つゆ、ばいう）は、北海道と小笠原諸島を除く日本")
    assert first["answers"] == {"text": ["小笠原諸島", "小笠原諸島を除く日本", "小笠原諸島"], "answer_start": [25, 25, 25]}
    assert first["is_impossible"] is False
    assert collections.Counter(len(d["answers"]["text"]) for d in docs) == {3: 3969, 2: 473}
    for d in docs:
        for text, start in zip(d["answers"]["text"], d["answers"]["answer_start"]):
            assert d["context"][start:start + len(text)] == text


def test_real_xwinograd_counts_and_readme_example(real_data_dir: Path) -> None:
    docs = load_split("xwinograd_ja", "validation", real_data_dir).docs
    assert len(docs) == 959
    assert collections.Counter(d["answer"] for d in docs) == {"1": 466, "2": 493}
    assert docs[0] == {"sentence1": "狙撃兵はテロリストを撃った。狙撃兵は悪漢だったからだ。",
                       "sentence2": "狙撃兵はテロリストを撃った。テロリストは悪漢だったからだ。", "answer": "2"}
    # ideographic spaces inside sentences are kept (the harness scores sentences unstripped)
    assert sum("\u3000" in d["sentence1"] for d in docs) == 7


def test_real_dataset_status(real_data_dir: Path) -> None:
    rows = {(r["name"], r["split"]): r for r in dataset_status(real_data_dir)}
    assert set(rows) == {(n, s) for n, d in DATASETS.items() for s in d.splits}
    for key in REAL_SPLITS:
        assert rows[key]["present"] and rows[key]["checksum"] == "ok"
        assert rows[key]["records"] == DATASETS[key[0]].splits[key[1]][0].records
    for key in [("jnli", "train"), ("jsquad", "train"), ("marc_ja", "validation"), ("jaqket_v2", "validation")]:
        assert not rows[key]["present"] and rows[key]["checksum"] == "missing" and rows[key]["how_to_get"]
    assert "Amazon" in rows[("marc_ja", "train")]["how_to_get"]
    assert rows[("jnli", "validation")]["licence"].startswith("CC BY-SA 4.0")


# ---------------------------------------------------------------------------------------------- the sample


@pytest.mark.parametrize(("dataset", "split"), [(n, s) for n, d in DATASETS.items() for s in d.splits])
def test_sample_loads_every_split_against_its_manifest(sample_dir: Path, dataset: str, split: str) -> None:
    loaded = load_split(dataset, split, sample_dir)
    assert isinstance(loaded, LoadedSplit) and loaded.docs
    main = loaded.files[0]
    assert main.expected == "manifest" and main.mismatch is None and main.records == len(loaded.docs)
    assert main.madeup == (any("made-up" in n for n in loaded.notes))


def test_sample_is_small_and_marks_madeup_files(sample_dir: Path) -> None:
    assert sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file()) < 300_000
    entries = json.loads((sample_dir / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    madeup = {rel for rel, e in entries.items() if e["madeup"]}
    assert madeup == {"jglue/jnli-v1.1/train-v1.1.json", "jglue/jsquad-v1.1/train-v1.1.json", MARC_TRAIN,
                      MARC_VALID, "jaqket/train_jaqket_59.350.json", "jaqket/dev_jaqket_59.350.json"}
    assert (sample_dir / "LICENSES.md").exists()
    for rel in entries:
        assert (sample_dir / rel).is_file()


def test_sample_real_rows_are_byte_prefixes_of_the_real_files(sample_dir: Path, real_data_dir: Path) -> None:
    for rel in ("jglue/jcommonsenseqa-v1.1/valid-v1.1.json", "jglue/jcommonsenseqa-v1.1/train-v1.1.json",
                "jglue/jnli-v1.1/valid-v1.1.json"):
        assert (real_data_dir / rel).read_bytes().startswith((sample_dir / rel).read_bytes())
    real_jp = [ln for ln in (real_data_dir / "xwinograd/dataset.tsv").read_bytes().split(b"\n") if ln.startswith(b"jp\t")]
    assert (sample_dir / "xwinograd/dataset.tsv").read_bytes().split(b"\n")[:-1] == real_jp[:40]
    full = load_split("jsquad", "validation", real_data_dir).docs
    part = load_split("jsquad", "validation", sample_dir).docs
    assert all(d in full for d in part) and part[0] == full[0]


def test_sample_madeup_train_sets_cover_all_labels(sample_dir: Path) -> None:
    assert {d["label"] for d in load_split("jnli", "train", sample_dir).docs} == {0, 1, 2}
    assert {d["label"] for d in load_split("marc_ja", "train", sample_dir).docs} == {0, 1}
    for d in load_split("jsquad", "train", sample_dir).docs:
        assert d["context"].startswith(f"{d['title']} [SEP] ")
        for text, start in zip(d["answers"]["text"], d["answers"]["answer_start"]):
            assert d["context"][start:start + len(text)] == text


# ------------------------------------------------------------------------------------------------- MARC-ja


def test_marc_id_lists_are_applied_to_a_madeup_validation_file(tmp_path: Path, sample_dir: Path) -> None:
    copy_lists(tmp_path)
    filter_ids = (tmp_path / FILTER_LIST).read_text().split()[:3]
    conv = [line.split(",") for line in (tmp_path / CONV_LIST).read_text().splitlines()]
    neg = [rid for rid, lab in conv if lab == "negative"][:2]
    pos = [rid for rid, lab in conv if lab == "positive"][:2]
    rows = marc_rows(5)
    rows += [{"sentence": "フィルタ対象のレビュー。", "label": "positive", "review_id": rid} for rid in filter_ids]
    rows += [{"sentence": "ラベル変換(変わる)。", "label": "positive", "review_id": neg[0]},
             {"sentence": "ラベル変換(変わる)。", "label": "negative", "review_id": pos[0]},
             {"sentence": "ラベル変換(同じ)。", "label": "negative", "review_id": neg[1]},
             {"sentence": "ラベル変換(同じ)。", "label": "positive", "review_id": pos[1]}]
    write(tmp_path, MARC_VALID, jsonl(rows))
    manifest(tmp_path, {MARC_VALID: {"sha256": "auto", "records": 9, "madeup": True}})

    loaded = load_split("marc_ja", "validation", tmp_path)
    ids = [d["review_id"] for d in loaded.docs]
    assert len(ids) == 9 and not set(filter_ids) & set(ids)
    labels = {d["review_id"]: d["label"] for d in loaded.docs}
    assert labels[neg[0]] == 1 and labels[pos[0]] == 0 and labels[neg[1]] == 1 and labels[pos[1]] == 0
    assert any("dropped 3 " in n and "relabelled 2 " in n for n in loaded.notes), loaded.notes
    assert [f.path for f in loaded.files] == [MARC_VALID, FILTER_LIST, CONV_LIST]
    assert [f.expected for f in loaded.files] == ["manifest", "official", "official"]
    assert [f.records for f in loaded.files] == [9, 331, 245]


def test_marc_official_count_after_filtering(tmp_path: Path) -> None:
    copy_lists(tmp_path)
    filter_ids = (tmp_path / FILTER_LIST).read_text().split()[:3]
    rows = marc_rows(5654) + [{"sentence": "x", "label": 0, "review_id": rid} for rid in filter_ids]
    write(tmp_path, MARC_VALID, jsonl(rows))
    loaded = load_split("marc_ja", "validation", tmp_path)
    assert len(loaded.docs) == 5654 and loaded.files[0].expected == "unverified"
    assert any("no published checksum" in n for n in loaded.notes)


def test_marc_old_loader_5734_rows_are_kept_as_is(tmp_path: Path) -> None:
    copy_lists(tmp_path)
    filter_ids = (tmp_path / FILTER_LIST).read_text().split()[:2]
    rows = marc_rows(5732) + [{"sentence": "x", "label": 0, "review_id": rid} for rid in filter_ids]
    write(tmp_path, MARC_VALID, jsonl(rows))
    loaded = load_split("marc_ja", "validation", tmp_path)
    assert len(loaded.docs) == 5734
    assert any("kept as-is" in n and "would drop 2" in n for n in loaded.notes), loaded.notes


def test_marc_parquet_with_int_labels(tmp_path: Path) -> None:
    rows = [{"sentence": "良い。", "label": 0, "review_id": "R1"}, {"sentence": "悪い。", "label": 1, "review_id": "R2"}]
    (tmp_path / "jglue/marc_ja-v1.1").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "jglue/marc_ja-v1.1/train.parquet")
    manifest(tmp_path, {"jglue/marc_ja-v1.1/train.parquet": {"sha256": None, "records": 2}})
    assert load_split("marc_ja", "train", tmp_path).docs == [{"review_id": "R1", "sentence": "良い。", "label": 0},
                                                              {"review_id": "R2", "sentence": "悪い。", "label": 1}]


def test_marc_validation_without_id_lists_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, MARC_VALID, jsonl(marc_rows(3)))
    with pytest.raises(DataError) as exc:
        load_split("marc_ja", "validation", tmp_path)
    assert "filter_review_id_list" in str(exc.value) and "jbench data --download marc_ja" in str(exc.value)


# -------------------------------------------------------------------------------------------------- JAQKET


def _ctx(i: int, has: bool) -> dict[str, Any]:
    return {"id": 500 + i, "title": f"記事{i}", "text": f"本文{i}", "score": 10.1 - i, "has_answer": has}


def test_jaqket_keeps_first_five_contexts_and_drops_unanswerable(tmp_path: Path) -> None:
    items = [
        {"qid": "Q1", "question": "問1?", "answers": ["甲", "乙"], "ctxs": [_ctx(i, i == 2) for i in range(8)]},
        {"qid": "Q2", "question": "問2?", "answers": ["丙"], "ctxs": [_ctx(i, i == 5) for i in range(8)]},
        {"qid": "Q3", "question": "問3?", "answers": ["丁"], "ctxs": [_ctx(i, False) for i in range(8)]},
        {"qid": "Q4", "question": "問4?", "answers": ["戊"], "ctxs": [_ctx(0, True)]},
    ]
    rel = "jaqket/dev_jaqket_59.350.json"
    for body in (json.dumps(items, ensure_ascii=False), jsonl(items)):  # JSON array (the loader) and JSON lines
        write(tmp_path, rel, body)
        manifest(tmp_path, {rel: {"sha256": "auto", "records": 2}})
        docs = load_split("jaqket_v2", "validation", tmp_path).docs
        assert [d["qid"] for d in docs] == ["Q1", "Q4"]
        q1 = docs[0]
        assert q1["answers"] == {"text": ["甲", "乙"], "answer_start": [-1, -1]}
        assert q1["ctxs"]["id"] == ["500", "501", "502", "503", "504"]
        assert q1["ctxs"]["has_answer"] == [False, False, True, False, False]
        assert q1["ctxs"]["score"][0] == pytest.approx(10.1) and q1["ctxs"]["score"][0] != 10.1  # float32
        assert set(q1["ctxs"]) == {"id", "title", "text", "score", "has_answer"}


def test_jaqket_missing_file_names_the_hub_source(real_data_dir: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_split("jaqket_v2", "validation", real_data_dir)
    msg = str(exc.value)
    assert "dev_jaqket_59.350.json" in msg and "kumapo/JAQKET" in msg


# ---------------------------------------------------------------------------------------------- XWinograd


def test_xwinograd_hub_forms(tmp_path: Path) -> None:
    rel = "xwinograd/xwinograd-ja.jsonl"
    write(tmp_path, rel, jsonl([
        {"sentence1": "AはBを見た。Aは笑った。", "sentence2": "AはBを見た。Bは笑った。", "answer": "2"},
        {"sentence": "AはBを見た。_は笑った。", "option1": "A", "option2": "B", "answer": 1},
    ]))
    manifest(tmp_path, {rel: {"sha256": "auto", "records": 2}})
    docs = load_split("xwinograd_ja", "validation", tmp_path).docs
    assert docs == [{"sentence1": "AはBを見た。Aは笑った。", "sentence2": "AはBを見た。Bは笑った。", "answer": "2"},
                    {"sentence1": "AはBを見た。Aは笑った。", "sentence2": "AはBを見た。Bは笑った。", "answer": "1"}]


def test_xwinograd_bad_row_names_the_line(tmp_path: Path, sample_dir: Path) -> None:
    lines = (sample_dir / "xwinograd/dataset.tsv").read_text(encoding="utf-8").split("\n")
    lines[2] = "\t".join(lines[2].split("\t")[:6])
    write(tmp_path, "xwinograd/dataset.tsv", "\n".join(lines))
    with pytest.raises(DataError) as exc:
        load_split("xwinograd_ja", "validation", tmp_path, allow_mismatch=True)
    assert exc.value.where is not None and exc.value.where.endswith("dataset.tsv:3")
    assert "6 tab-separated columns" in str(exc.value)


# ------------------------------------------------------------------------------------- alternative formats


def test_parquet_and_flat_jsonl_alternatives_match_the_upstream_format(tmp_path: Path, sample_dir: Path) -> None:
    jnli = load_split("jnli", "validation", sample_dir).docs
    (tmp_path / "jglue/jnli-v1.1").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(jnli), tmp_path / "jglue/jnli-v1.1/validation.parquet")
    squad = load_split("jsquad", "validation", sample_dir).docs
    hf_style = [{**d, "answers": [{"text": t, "answer_start": s}
                                  for t, s in zip(d["answers"]["text"], d["answers"]["answer_start"])]} for d in squad]
    write(tmp_path, "jglue/jsquad-v1.1/validation.jsonl", jsonl(hf_style))
    manifest(tmp_path, {"jglue/jnli-v1.1/validation.parquet": {"sha256": "auto", "records": len(jnli)},
                        "jglue/jsquad-v1.1/validation.jsonl": {"sha256": "auto", "records": len(squad)}})
    assert load_split("jnli", "validation", tmp_path).docs == jnli
    assert load_split("jsquad", "validation", tmp_path).docs == squad


def test_upstream_file_wins_over_alternatives(tmp_path: Path, sample_dir: Path) -> None:
    rel = "jglue/jnli-v1.1/valid-v1.1.json"
    write(tmp_path, rel, (sample_dir / rel).read_bytes())
    write(tmp_path, "jglue/jnli-v1.1/validation.parquet", b"not parquet")
    manifest(tmp_path, {rel: {"sha256": "auto", "records": 40}})
    loaded = load_split("jnli", "validation", tmp_path)
    assert loaded.files[0].path == rel and any("also present but ignored" in n for n in loaded.notes)


# ----------------------------------------------------------------------------------------------- errors


def test_missing_file_names_paths_and_download_command(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_split("jnli", "train", tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "jglue/jnli-v1.1/train-v1.1.json") in msg
    assert "jbench data --download jnli" in msg
    assert "https://raw.githubusercontent.com/yahoojapan/JGLUE/v1.1.0/datasets/jnli-v1.1/train-v1.1.json" in msg


def test_missing_marc_explains_withdrawal_and_accepted_formats(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_split("marc_ja", "validation", tmp_path)
    msg = str(exc.value)
    assert "Amazon" in msg and "valid-v1.0.json" in msg and "validation.parquet" in msg


def test_unknown_dataset_and_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'jcqa'"):
        load_split("jcqa", "validation", tmp_path)
    with pytest.raises(DataError, match="has no split 'train'"):
        load_split("xwinograd_ja", "train", tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    write(tmp_path, MARC_TRAIN, b"")
    with pytest.raises(DataError, match="empty"):
        load_split("marc_ja", "train", tmp_path)


def test_truncated_json_lines(tmp_path: Path) -> None:
    body = jsonl(marc_rows(3))
    write(tmp_path, MARC_TRAIN, body[: len(body) - 15])
    with pytest.raises(DataError) as exc:
        load_split("marc_ja", "train", tmp_path)
    assert "truncated" in str(exc.value) and exc.value.where is not None and exc.value.where.endswith(":3")


def test_truncated_official_file_is_refused_with_a_size_hint(tmp_path: Path, real_data_dir: Path) -> None:
    rel = "jglue/jsquad-v1.1/valid-v1.1.json"
    data = (real_data_dir / rel).read_bytes()
    write(tmp_path, rel, data[:4998])  # cut between two characters
    with pytest.raises(DataError) as exc:
        load_split("jsquad", "validation", tmp_path)
    assert "checksum mismatch" in str(exc.value) and "(truncated?)" in str(exc.value)
    with pytest.raises(DataError, match="file is truncated: JSON ends early"):  # allowing a mismatch is no bypass
        load_split("jsquad", "validation", tmp_path, allow_mismatch=True)
    write(tmp_path, rel, data[:4999])  # cut inside a 3-byte character
    with pytest.raises(DataError, match="file is truncated: it ends inside a UTF-8 character"):
        load_split("jsquad", "validation", tmp_path, allow_mismatch=True)


def test_not_json_names_file_and_line(tmp_path: Path) -> None:
    lines = jsonl(marc_rows(4)).splitlines(keepends=True)
    lines[2] = "{this is not json}\n"
    write(tmp_path, MARC_TRAIN, "".join(lines))
    with pytest.raises(DataError) as exc:
        load_split("marc_ja", "train", tmp_path)
    assert "not valid JSON" in str(exc.value)
    assert exc.value.where == f"{tmp_path / MARC_TRAIN}:3"


def test_wrong_schema_names_field_and_line(tmp_path: Path) -> None:
    rows = marc_rows(3)
    del rows[1]["label"]
    write(tmp_path, MARC_TRAIN, jsonl(rows))
    with pytest.raises(DataError) as exc:
        load_split("marc_ja", "train", tmp_path)
    assert "missing field 'label'" in str(exc.value) and exc.value.where == f"{tmp_path / MARC_TRAIN}:2"
    rows = marc_rows(3)
    rows[2]["label"] = "neutral"
    write(tmp_path, MARC_TRAIN, jsonl(rows))
    with pytest.raises(DataError, match="'label' has value 'neutral'"):
        load_split("marc_ja", "train", tmp_path)


def test_count_mismatch(tmp_path: Path) -> None:
    write(tmp_path, MARC_TRAIN, jsonl(marc_rows(4)))
    manifest(tmp_path, {MARC_TRAIN: {"sha256": "auto", "records": 5}})
    with pytest.raises(DataError, match="record count mismatch: got 4 records, expected 5"):
        load_split("marc_ja", "train", tmp_path)
    loaded = load_split("marc_ja", "train", tmp_path, allow_mismatch=True)
    assert loaded.files[0].mismatch == "record count 4 != expected 5"


def test_checksum_mismatch_refused_then_allowed(tmp_path: Path, real_data_dir: Path) -> None:
    rel = "jglue/jcommonsenseqa-v1.1/valid-v1.1.json"
    data = (real_data_dir / rel).read_bytes().replace("マザーボード".encode(), "マザーボート".encode(), 1)
    write(tmp_path, rel, data)
    with pytest.raises(DataError) as exc:
        load_split("jcommonsenseqa", "validation", tmp_path)
    msg = str(exc.value)
    assert "checksum mismatch" in msg and hashlib.sha256(data).hexdigest() in msg and "allow" in msg
    loaded = load_split("jcommonsenseqa", "validation", tmp_path, allow_mismatch=True)
    assert len(loaded.docs) == 1119 and loaded.docs[0]["choice2"] == "マザーボート"
    info = loaded.files[0]
    assert info.expected == "official" and info.mismatch is not None and "sha256" in info.mismatch
    assert any("MISMATCH ALLOWED" in n for n in loaded.notes)
    assert {r["name"]: r for r in dataset_status(tmp_path) if r["split"] == "validation"}[
        "jcommonsenseqa"]["checksum"] == "mismatch"


def test_git_blob_only_file_is_verified_by_blob(tmp_path: Path) -> None:
    write(tmp_path, "jglue/jnli-v1.1/train-v1.1.json", jsonl([{"sentence_pair_id": "0", "yjcaptions_id": "1",
                                                               "sentence1": "a", "sentence2": "b", "label": 0}]))
    with pytest.raises(DataError, match="git blob .* != official 14d9948a80dc585cfd53eb358594b0722b937802"):
        load_split("jnli", "train", tmp_path)


def test_manifest_overrides_the_registry(tmp_path: Path, real_data_dir: Path) -> None:
    rel = "jglue/jcommonsenseqa-v1.1/valid-v1.1.json"
    lines = (real_data_dir / rel).read_bytes().splitlines(keepends=True)[:7]
    write(tmp_path, rel, b"".join(lines))
    manifest(tmp_path, {rel: {"sha256": "auto", "records": 7, "madeup": False, "description": "first 7 rows"}})
    loaded = load_split("jcommonsenseqa", "validation", tmp_path)
    assert loaded.files[0].expected == "manifest" and len(loaded.docs) == 7 and loaded.files[0].madeup is False
    manifest(tmp_path, {rel: {"sha256": "0" * 64, "records": 7}})
    with pytest.raises(DataError, match=f"from {MANIFEST_NAME}"):
        load_split("jcommonsenseqa", "validation", tmp_path)


def test_invalid_manifest(tmp_path: Path) -> None:
    write(tmp_path, MANIFEST_NAME, "{not json")
    write(tmp_path, MARC_TRAIN, jsonl(marc_rows(1)))
    with pytest.raises(DataError, match="invalid data manifest"):
        load_split("marc_ja", "train", tmp_path)


def test_copy_of_sample_is_still_valid(tmp_path: Path, sample_dir: Path) -> None:
    shutil.copytree(sample_dir, tmp_path / "s")
    rows = dataset_status(tmp_path / "s")
    assert all(r["present"] and r["checksum"] == "ok" and r["expected"] == "manifest" for r in rows), rows
    assert {r["name"] for r in rows if r["madeup"]} == {"jnli", "jsquad", "marc_ja", "jaqket_v2"}


def test_jaqket_string_scores_and_bad_scores(tmp_path: Path) -> None:
    """DPR writes scores as strings; the loader's ``float(score)`` accepts them, anything else is an error."""
    rel = "jaqket/train_jaqket_59.350.json"
    item = {"qid": "Q1", "question": "問?", "answers": ["甲"], "ctxs": [{**_ctx(0, True), "score": "9.5"}]}
    write(tmp_path, rel, json.dumps([item]))
    manifest(tmp_path, {rel: {"sha256": None, "records": 1}})
    assert load_split("jaqket_v2", "train", tmp_path).docs[0]["ctxs"]["score"] == [9.5]
    item["ctxs"][0]["score"] = "high"
    write(tmp_path, rel, json.dumps([item]))
    with pytest.raises(DataError, match="'score' is not a number"):
        load_split("jaqket_v2", "train", tmp_path)
