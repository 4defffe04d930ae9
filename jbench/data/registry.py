"""The dataset registry: which files each benchmark needs, where they come from and how to verify them.

Pure data. Every path is relative to a *data dir* laid out like ``/work/shared/data`` (the original upstream
names and formats, byte for byte), so a directory someone assembled by hand, ``jbench data --download`` and the
bundled sample all look the same to the loader.

``records`` is always the number of *documents the loader yields from that file* (after the dataset's own
filtering, e.g. only ``jp`` rows of the XWinograd TSV, or JAQKET questions with an answer in the first five
contexts), because that is the number the reference harness and its published results are pinned to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

JGLUE_TAG = "v1.1.0"
_JGLUE_RAW = f"https://raw.githubusercontent.com/yahoojapan/JGLUE/{JGLUE_TAG}"
_XWINO_COMMIT = "d2cfbbf7dc8f4ec66381e9651f9f5633c2df848d"
_XWINO_RAW = f"https://raw.githubusercontent.com/yandex-research/crosslingual_winograd/{_XWINO_COMMIT}"
_JAQKET_REPO = "kumapo/JAQKET"
_JAQKET_HF = f"https://huggingface.co/datasets/{_JAQKET_REPO}/resolve/main"
_SHUNK_MARC_PARQUET = "https://huggingface.co/datasets/shunk031/JGLUE/resolve/refs%2Fconvert%2Fparquet/MARC-ja"

MANIFEST_NAME = "jbench-manifest.json"

JGLUE_LICENCE = "CC BY-SA 4.0 (yahoojapan/JGLUE v1.1.0)"
XWINOGRAD_LICENCE = (
    "Apache-2.0 (yandex-research/crosslingual_winograd); Japanese rows from ku-nlp/Winograd-Schema-Challenge-Ja "
    "(no licence stated); Hub copies are tagged CC BY 4.0"
)
MARC_LICENCE = "Amazon MARC licence (text withdrawn by Amazon); JGLUE id lists CC BY-SA 4.0"
JAQKET_LICENCE = "CC BY-SA 4.0 (kumapo/JAQKET; questions from AI王 / cl-tohoku quiz-datasets)"

# Formats understood by ``jbench.data.readers.read_records``.
FORMATS = ("jsonl", "parquet", "squad_json", "xwinograd_tsv", "jaqket_json", "id_list", "label_conv_csv")


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face Hub repository at a revision: fetched with ``huggingface_hub`` (token,
    ``HF_ENDPOINT``, HF cache) rather than as a plain URL."""

    repo_id: str
    filename: str
    revision: str = "main"
    repo_type: str = "dataset"

    def describe(self) -> str:
        return f"hf://{self.repo_type}s/{self.repo_id}@{self.revision}/{self.filename}"


@dataclass(frozen=True)
class FileSpec:
    """One concrete file. ``sha256`` wins over ``git_blob`` when both are known; with neither, the file can
    only be checked for parseability and record count (expected="unverified")."""

    relpath: str
    url: str | None
    sha256: str | None
    git_blob: str | None
    records: int | tuple[int, ...] | None
    format: str
    size: int | None = None
    source: str = ""
    hub: HubFile | None = None

    def accepted_records(self) -> tuple[int, ...] | None:
        """The record counts accepted for this file, as a tuple (``None``: not checked)."""
        if self.records is None:
            return None
        return self.records if isinstance(self.records, tuple) else (self.records,)


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark. ``splits`` maps "train"/"validation" to alternatives in preference order (the upstream
    file first, then conversions such as the HF parquet export); the first one present in the data dir is
    used. ``aux`` holds helper files (MARC-ja's JGLUE id lists)."""

    name: str
    title: str
    licence: str
    splits: dict[str, list[FileSpec]]
    reader: str
    notes: str
    how_to_get: str
    aux: dict[str, FileSpec] = field(default_factory=dict)


def _jglue(relpath: str, *, format: str, records: int, sha256: str | None, git_blob: str | None,
           size: int | None = None) -> FileSpec:
    """A JGLUE v1.1.0 file at its upstream path ``datasets/<...>`` (our layout drops the ``datasets/``)."""
    sub = relpath.removeprefix("jglue/")
    return FileSpec(relpath=relpath, url=f"{_JGLUE_RAW}/datasets/{sub}", sha256=sha256, git_blob=git_blob,
                    records=records, format=format, size=size, source=f"yahoojapan/JGLUE@{JGLUE_TAG}")


def _hf_parquet(relpath: str, records: int | tuple[int, ...]) -> FileSpec:
    """An HF parquet export placed by the user; no published checksum exists for these."""
    return FileSpec(relpath=relpath, url=None, sha256=None, git_blob=None, records=records, format="parquet",
                    source="HF parquet conversion (placed by the user)")


JCOMMONSENSEQA = DatasetSpec(
    name="jcommonsenseqa",
    title="JCommonsenseQA (JGLUE v1.1)",
    licence=JGLUE_LICENCE,
    reader="jcommonsenseqa",
    splits={
        "train": [
            _jglue("jglue/jcommonsenseqa-v1.1/train-v1.1.json", format="jsonl", records=8939, size=1879961,
                   sha256="9b55fae5ecb3aedd6f8ce5bc09196c3b629864668ec6c18eee4d65c0aa48229e",
                   git_blob="4d11d31788cb22850b0a88d41a1ffdd13e8a180b"),
            _hf_parquet("jglue/jcommonsenseqa-v1.1/train.parquet", 8939),
        ],
        "validation": [
            _jglue("jglue/jcommonsenseqa-v1.1/valid-v1.1.json", format="jsonl", records=1119, size=235633,
                   sha256="0d8d76f3bfa0d174866939882faccdd01fbc2bcd5a76c43748ba0c40a7b3b8d4",
                   git_blob="1099679e5bc9a4d70f9ae6a6e7b41dca84897f99"),
            _hf_parquet("jglue/jcommonsenseqa-v1.1/validation.parquet", 1119),
        ],
    },
    notes="JSON lines in file order (= shunk031/JGLUE order); label is the int index of the correct choice.",
    how_to_get="jbench data --download jcommonsenseqa (JGLUE v1.1.0 from GitHub)",
)

JNLI = DatasetSpec(
    name="jnli",
    title="JNLI (JGLUE v1.1)",
    licence=JGLUE_LICENCE,
    reader="jnli",
    splits={
        "train": [
            # No sha256 was ever recorded for train (it could not be fetched here); the git blob id is known.
            _jglue("jglue/jnli-v1.1/train-v1.1.json", format="jsonl", records=20073, sha256=None,
                   git_blob="14d9948a80dc585cfd53eb358594b0722b937802"),
            _hf_parquet("jglue/jnli-v1.1/train.parquet", 20073),
        ],
        "validation": [
            _jglue("jglue/jnli-v1.1/valid-v1.1.json", format="jsonl", records=2434, size=632452,
                   sha256="39a41d5a112cc6c5baafa7d2464e579843e904a4b7206a4e905517a257f6459c",
                   git_blob="fee97af8f0b9325441b35186fcb04b3e0415800d"),
            _hf_parquet("jglue/jnli-v1.1/validation.parquet", 2434),
        ],
    },
    notes=("Labels mapped like the HF ClassLabel: entailment=0, contradiction=1, neutral=2. v1.1 is the version "
           "published JP-stable results used (v1.2/v1.3 relabel 29 validation pairs)."),
    how_to_get="jbench data --download jnli (JGLUE v1.1.0 from GitHub)",
)

JSQUAD = DatasetSpec(
    name="jsquad",
    title="JSQuAD (JGLUE v1.1)",
    licence=JGLUE_LICENCE,
    reader="jsquad",
    splits={
        "train": [
            _jglue("jglue/jsquad-v1.1/train-v1.1.json", format="squad_json", records=62859, sha256=None,
                   git_blob="20ce716ee531e3e23088f5840a3b0751ae803424"),
            _hf_parquet("jglue/jsquad-v1.1/train.parquet", 62859),
            FileSpec("jglue/jsquad-v1.1/train.jsonl", None, None, None, 62859, "jsonl",
                     source="flat JSON lines (placed by the user)"),
        ],
        "validation": [
            _jglue("jglue/jsquad-v1.1/valid-v1.1.json", format="squad_json", records=4442, size=1976638,
                   sha256="fb0a57a35281ff03bbe7f0e878cff5b577985fbe6fcb242e7e8ddb63d1c0ab11",
                   git_blob="bcde414e0b7131607bb1fa2c4542dd888f68771a"),
            _hf_parquet("jglue/jsquad-v1.1/validation.parquet", 4442),
            FileSpec("jglue/jsquad-v1.1/validation.jsonl", None, None, None, 4442, "jsonl",
                     source="flat JSON lines (placed by the user)"),
        ],
    },
    notes=("SQuAD-v1 nested JSON flattened article -> paragraph -> qas (what shunk031/JGLUE yields); context "
           "keeps its '<title> [SEP] ' prefix. Use JGLUE v1.1 train: v1.3 dropped low-quality train questions."),
    how_to_get="jbench data --download jsquad (JGLUE v1.1.0 from GitHub)",
)

_MARC_MISSING = (
    "MARC-ja text is not distributed by JGLUE and Amazon has withdrawn the Multilingual Amazon Reviews Corpus, "
    "so jbench cannot download it. Accepted formats: the JGLUE script output (JSON lines "
    "{\"sentence\", \"label\": \"positive\"|\"negative\", \"review_id\"}) as "
    "jglue/marc_ja-v1.1/{train,valid}-v1.0.json, or the HF parquet conversion (label int 0=positive, "
    "1=negative) as jglue/marc_ja-v1.1/{train,validation}.parquet (shunk031/JGLUE's loader falls back to "
    f"{_SHUNK_MARC_PARQUET}/jglue-{{train,validation}}.parquet; check its licence yourself)."
)

MARC_JA = DatasetSpec(
    name="marc_ja",
    title="MARC-ja (JGLUE v1.1)",
    licence=MARC_LICENCE,
    reader="marc_ja",
    splits={
        "train": [
            FileSpec("jglue/marc_ja-v1.1/train-v1.0.json", None, None, None, 187528, "jsonl",
                     source="JGLUE preprocess/marc-ja/scripts/marc-ja.py output (user-supplied)"),
            _hf_parquet("jglue/marc_ja-v1.1/train.parquet", 187528),
            _hf_parquet("jglue/marc_ja-v1.1/jglue-train.parquet", 187528),
        ],
        "validation": [
            # 5,654 = official JGLUE dev size; 5,734 = the older shunk031 loader that some published runs used.
            FileSpec("jglue/marc_ja-v1.1/valid-v1.0.json", None, None, None, (5654, 5734), "jsonl",
                     source="JGLUE preprocess/marc-ja/scripts/marc-ja.py output (user-supplied)"),
            _hf_parquet("jglue/marc_ja-v1.1/validation.parquet", (5654, 5734)),
            _hf_parquet("jglue/marc_ja-v1.1/jglue-validation.parquet", (5654, 5734)),
        ],
    },
    aux={
        "filter_review_id_list": FileSpec(
            "jglue/marc_ja-v1.1/filter_review_id_list/valid.txt",
            f"{_JGLUE_RAW}/preprocess/marc-ja/data/filter_review_id_list/valid.txt",
            "9b276269f1bfe21b9ca3d2b9cf29fd0db75f39c7ec9a788c2fc2f5efbb469509",
            "f44bfadb5fcb1255d7fff5dc6ab8a36c21849e91", 331, "id_list", size=4870,
            source=f"yahoojapan/JGLUE@{JGLUE_TAG}"),
        "label_conv_review_id_list": FileSpec(
            "jglue/marc_ja-v1.1/label_conv_review_id_list/valid.txt",
            f"{_JGLUE_RAW}/preprocess/marc-ja/data/label_conv_review_id_list/valid.txt",
            "00759d55bcc7137b8808cddb8536030ab5f5326f9c1b414901a1173ecb6aa422",
            "bbc329bb00cd6946ea31cbf30c6179acff00de0f", 245, "label_conv_csv", size=5810,
            source=f"yahoojapan/JGLUE@{JGLUE_TAG}"),
    },
    notes=(
        "label 0=positive, 1=negative. No checksums exist for any MARC-ja text file (expected='unverified'). "
        "Validation: JGLUE's filter list (drop) and label-conversion list (override) are applied and the counts "
        "recorded in notes, except for a 5,734-row file: that is the older loader's output, which predates the "
        "list processing and is what the published rinna/open-calm numbers used, so it is kept as-is and the "
        "notes only report what the lists would change. " + _MARC_MISSING
    ),
    how_to_get=("not downloadable: Amazon withdrew MARC. Place the JGLUE marc-ja.py output "
                "(jglue/marc_ja-v1.1/{train,valid}-v1.0.json) or the HF parquet export "
                "(jglue/marc_ja-v1.1/{train,validation}.parquet) in the data dir; "
                "`jbench data --download marc_ja` fetches JGLUE's validation id lists"),
)

XWINOGRAD_JA = DatasetSpec(
    name="xwinograd_ja",
    title="XWinograd, Japanese portion",
    licence=XWINOGRAD_LICENCE,
    reader="xwinograd_ja",
    splits={
        "validation": [
            FileSpec("xwinograd/dataset.tsv", f"{_XWINO_RAW}/dataset.tsv",
                     "2c4cdad50f7a35523ce16f4437b7d5c814ebf7a49ad10f618468eeb32f08a873",
                     "504e07a7ed752d48017c2fbd000ce54ebd2e096d", 959, "xwinograd_tsv", size=2004732,
                     source=f"yandex-research/crosslingual_winograd@{_XWINO_COMMIT}"),
            FileSpec("xwinograd/xwinograd-ja.jsonl", None, None, None, 959, "jsonl",
                     source="Hub conversion (polm-stability/xwinograd-ja or Muennighoff/xwinograd jp)"),
            FileSpec("xwinograd/xwinograd-ja.json", None, None, None, 959, "jsonl",
                     source="polm-stability/xwinograd-ja test/xwinograd-ja.json (JSON lines)"),
            FileSpec("xwinograd/xwinograd-ja.parquet", None, None, None, 959, "parquet",
                     source="Hub parquet conversion"),
        ],
    },
    notes=(
        "The reference harness uses the Hub 'test' split as validation (959 rows, 0-shot, no train split). "
        "From the upstream TSV, sentence1/sentence2 substitute candidate 1/2 for the pronoun token span and "
        "answer='1' if candidate 1 is correct. Muennighoff's convert_tsv.py placed the correct option at a random "
        "position, so the Hub's answer order differs row by row; the metric (gold ll strictly greater) does not "
        "depend on that order. Byte equality of the sentences with the Hub files is unverified."
    ),
    how_to_get="jbench data --download xwinograd_ja (upstream TSV from GitHub)",
)

JAQKET_V2 = DatasetSpec(
    name="jaqket_v2",
    title="JAQKET v2.0 (kumapo/JAQKET, DPR-retrieved contexts)",
    licence=JAQKET_LICENCE,
    reader="jaqket_v2",
    splits={
        "train": [
            FileSpec("jaqket/train_jaqket_59.350.json", f"{_JAQKET_HF}/train_jaqket_59.350.json", None, None,
                     2154, "jaqket_json", source="HF kumapo/JAQKET (Git LFS, ~222 MB)",
                     hub=HubFile(_JAQKET_REPO, "train_jaqket_59.350.json")),
        ],
        "validation": [
            FileSpec("jaqket/dev_jaqket_59.350.json", f"{_JAQKET_HF}/dev_jaqket_59.350.json", None, None,
                     1164, "jaqket_json", source="HF kumapo/JAQKET (Git LFS, ~128 MB)",
                     hub=HubFile(_JAQKET_REPO, "dev_jaqket_59.350.json")),
        ],
    },
    notes=(
        "kumapo/JAQKET v2.0 loader semantics: the file is a JSON array (JSON lines also accepted) of "
        "{qid, question, answers[str], ctxs[{id,title,text,score,has_answer}]}; keep the first 5 ctxs and drop "
        "questions with no has_answer among them (train 2,154, validation 1,164); answers.answer_start = -1; "
        "score is rounded to float32 like the HF feature. No checksums are published. The AI王 TSVs in "
        "jaqket/aio_*.txt (cl-tohoku/quiz-datasets) have no retrieved contexts, so they cannot serve this task."
    ),
    how_to_get="jbench data --download jaqket_v2 (HF kumapo/JAQKET; needs Hugging Face access)",
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (JCOMMONSENSEQA, JNLI, MARC_JA, JSQUAD, XWINOGRAD_JA, JAQKET_V2)
}
