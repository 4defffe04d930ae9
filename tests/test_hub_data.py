"""Data from where users keep it, through the CLI: Hub files via huggingface_hub (a loopback Hub at HF_ENDPOINT),
plain URLs via pooch (a loopback server whose first answer fails), and ``hub:`` / folder sources read with the
``datasets`` library. Never the internet."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _fake_hub import FakeHub, Repo  # noqa: E402 - tests/ is on sys.path (rootdir conftest)
from jbench.data import load_split
from jbench.data.sources import SOURCES_NAME
from jbench.errors import DataError

Main = Callable[..., int]
DEV, TRAIN = "jaqket/dev_jaqket_59.350.json", "jaqket/train_jaqket_59.350.json"
TSV = "xwinograd/dataset.tsv"
JNLI_VALID = "jglue/jnli-v1.1/valid-v1.1.json"


def jaqket_file(n_kept: int, n_dropped: int = 0) -> bytes:
    """A kumapo/JAQKET v2.0-shaped JSON array: ``n_kept`` questions with an answer in the first 5 contexts."""
    def q(i: int, has: bool) -> dict:
        ctxs = [{"id": f"{i}-{j}", "title": "t", "text": "本文", "score": "1.5", "has_answer": has and j == 2}
                for j in range(5)]
        return {"qid": f"QA-{i}", "question": f"問{i}", "answers": ["答"], "ctxs": ctxs}
    items = [q(i, True) for i in range(n_kept)] + [q(n_kept + i, False) for i in range(n_dropped)]
    return json.dumps(items, ensure_ascii=False).encode()


def parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def jnli_rows(real_data_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (real_data_dir / JNLI_VALID).read_text(encoding="utf-8").splitlines()]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".part" in p.name]


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Online, with a private HF cache and no token; huggingface_hub read HF_HUB_OFFLINE / HF_HUB_CACHE at import,
    so its constants are set too (a user's process reads them from the environment at start)."""
    import huggingface_hub.constants as hc

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "ds-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("JBENCH_DOWNLOAD_RETRIES", "0")
    return cache


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, hf_env: Path) -> Iterator[Callable[[dict[str, Repo]], FakeHub]]:
    hubs: list[FakeHub] = []

    def start(repos: dict[str, Repo]) -> FakeHub:
        hub = FakeHub(repos).__enter__()
        hubs.append(hub)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        return hub
    yield start
    for hub in hubs:
        hub.__exit__()


# ------------------------------------------------------------------------------- Hub files (JAQKET)


def jaqket_repo(**kw: object) -> Repo:
    return Repo({"dev_jaqket_59.350.json": jaqket_file(1164, 3), "train_jaqket_59.350.json": jaqket_file(2154)},
                **kw)  # type: ignore[arg-type]


def test_hub_files_download_through_the_endpoint_into_the_hf_cache_then_offline(
        fake_hub: Callable, hf_env: Path, jbench_main: Main, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hub = fake_hub({"kumapo/JAQKET": jaqket_repo()})
    data = tmp_path / "data"
    assert jbench_main("data", "--download", "jaqket_v2", "--data-dir", str(data), "--no-progress") == 0
    err = capsys.readouterr().err
    assert f"downloaded {DEV}" in err and "records=1164" in err and "records=2154" in err
    assert ("GET", "/datasets/kumapo/JAQKET/resolve/main/dev_jaqket_59.350.json", None) in hub.requests
    assert list(hf_env.glob("datasets--kumapo--JAQKET/snapshots/*/dev_jaqket_59.350.json"))
    assert len(load_split("jaqket_v2", "validation", data).docs) == 1164 and leftovers(data) == []

    # offline: the HF cache serves it, and nothing goes over the wire
    go_offline(monkeypatch)
    shutil.rmtree(data)
    before = len(hub.requests)
    assert jbench_main("data", "--download", "jaqket_v2", "--data-dir", str(data), "--no-progress") == 0
    assert len(hub.requests) == before and (data / DEV).is_file()

    # offline with nothing cached: one clear message, no file
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    capsys.readouterr()
    fresh = tmp_path / "fresh"
    assert jbench_main("data", "--download", "jaqket_v2", "--data-dir", str(fresh)) == 2
    err = capsys.readouterr().err
    assert "not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it" in err
    assert "HF_HUB_OFFLINE=0" in err and "Traceback" not in err
    assert not (fresh / DEV).exists() and leftovers(fresh) == []


def test_private_repo_needs_the_token(fake_hub: Callable, jbench_main: Main, tmp_path: Path,
                                      capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = fake_hub({"kumapo/JAQKET": jaqket_repo(token="hf_loopback_secret")})
    assert jbench_main("data", "--download", "jaqket_v2", "--data-dir", str(tmp_path / "d")) == 2
    err = capsys.readouterr().err
    assert "repository not found (or private without a valid token)" in err and "HF_TOKEN" in err
    monkeypatch.setenv("HF_TOKEN", "hf_loopback_secret")
    assert jbench_main("data", "--download", "jaqket_v2", "--data-dir", str(tmp_path / "d")) == 0
    assert any(auth == "Bearer hf_loopback_secret" for _, _, auth in hub.requests)


def test_hub_file_with_wrong_count_is_exit_2_and_leaves_nothing(fake_hub: Callable, jbench_main: Main,
                                                                 tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fake_hub({"kumapo/JAQKET": Repo({"dev_jaqket_59.350.json": jaqket_file(1000),
                                     "train_jaqket_59.350.json": jaqket_file(2154)})})
    data = tmp_path / "d"
    assert jbench_main("data", "--download", "jaqket_v2", "--data-dir", str(data)) == 2
    err = capsys.readouterr().err
    assert "record count mismatch: got 1,000, expected 1,164" in err and "Traceback" not in err
    assert (data / TRAIN).is_file() and not (data / DEV).exists() and leftovers(data) == []


def test_hub_file_not_in_repo(fake_hub: Callable, jbench_main: Main, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    fake_hub({"kumapo/JAQKET": Repo({"dev_jaqket_59.350.json": jaqket_file(1164)})})
    assert jbench_main("data", "--download", "jaqket_v2", "--data-dir", str(tmp_path / "d")) == 2
    err = capsys.readouterr().err
    assert "cannot download train_jaqket_59.350.json: file not found in the repository" in err
    assert "where: hf://datasets/kumapo/JAQKET@main/train_jaqket_59.350.json" in err
    assert leftovers(tmp_path / "d") == []


# ------------------------------------------------------------------------------- plain URLs (pooch)


class _FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, but answers the first GET of every path with HTTP 500 (a transient failure)."""

    seen: dict[str, int]
    fail_first = True
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        with self.lock:
            self.seen[self.path] = self.seen.get(self.path, 0) + 1
            first = self.seen[self.path] == 1
        if first and self.fail_first:
            self.send_error(500, "transient")
            return
        super().do_GET()


@pytest.fixture
def flaky_server(tmp_path: Path) -> Iterator[Callable[[Path], tuple[str, dict[str, int]]]]:
    servers = []

    def serve(directory: Path, fail_first: bool = True) -> tuple[str, dict[str, int]]:
        seen: dict[str, int] = {}
        handler = type("H", (_FlakyHandler,), {"seen": seen, "fail_first": fail_first})

        def make(*args: object, **kw: object) -> http.server.BaseHTTPRequestHandler:
            return handler(*args, directory=str(directory), **kw)  # type: ignore[arg-type]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen
    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


def test_plain_download_retries_a_failed_request(flaky_server: Callable, real_data_dir: Path, jbench_main: Main,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "xwinograd").mkdir(parents=True)
    shutil.copyfile(real_data_dir / TSV, mirror / TSV)
    url, seen = flaky_server(mirror)
    monkeypatch.setenv("JBENCH_DOWNLOAD_RETRIES", "0")
    data = tmp_path / "data"
    assert jbench_main("data", "--download", "xwinograd_ja", "--mirror", url, "--data-dir", str(data)) == 2
    err = capsys.readouterr().err
    assert "download failed: HTTP 500" in err and f"{url}/{TSV}" in err and leftovers(data) == []
    seen.clear()
    monkeypatch.setenv("JBENCH_DOWNLOAD_RETRIES", "1")
    assert jbench_main("data", "--download", "xwinograd_ja", "--mirror", url, "--data-dir", str(data)) == 0
    assert seen == {f"/{TSV}": 2}  # failed once, retried once
    assert (data / TSV).read_bytes() == (real_data_dir / TSV).read_bytes() and leftovers(data) == []
    assert "records=959" in capsys.readouterr().err


def test_a_404_is_not_retried(flaky_server: Callable, jbench_main: Main, tmp_path: Path,
                              capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    url, seen = flaky_server(tmp_path / "empty", fail_first=False)
    monkeypatch.setenv("JBENCH_DOWNLOAD_RETRIES", "3")
    assert jbench_main("data", "--download", "xwinograd_ja", "--mirror", url, "--data-dir", str(tmp_path / "d")) == 2
    assert "download failed: HTTP 404" in capsys.readouterr().err
    assert seen == {f"/{TSV}": 1}


def test_plain_download_bad_inputs_through_the_cli(http_server: Callable, real_data_dir: Path, jbench_main: Main,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JBENCH_DOWNLOAD_RETRIES", "0")
    mirror = tmp_path / "mirror"
    (mirror / "xwinograd").mkdir(parents=True)
    body = bytearray((real_data_dir / TSV).read_bytes())
    body[500] ^= 1
    (mirror / TSV).write_bytes(bytes(body))
    url = http_server(mirror)
    data = tmp_path / "data"
    assert jbench_main("data", "--download", "xwinograd_ja", "--mirror", url, "--data-dir", str(data)) == 2
    err = capsys.readouterr().err
    assert "downloaded file fails its checksum: sha256" in err and "what to do:" in err
    assert not (data / TSV).exists() and leftovers(data) == []
    (mirror / TSV).unlink()
    assert jbench_main("data", "--download", "xwinograd_ja", "--mirror", url, "--data-dir", str(data)) == 2
    assert "download failed: HTTP 404" in capsys.readouterr().err
    monkeypatch.setenv("JBENCH_DOWNLOAD_RETRIES", "many")
    assert jbench_main("data", "--download", "xwinograd_ja", "--mirror", url, "--data-dir", str(data)) == 2
    assert "JBENCH_DOWNLOAD_RETRIES must be a whole number" in capsys.readouterr().err


# ------------------------------------------------------------------------------- hub: sources (datasets)


def jnli_repo(real_data_dir: Path, rename: dict[str, str] | None = None) -> Repo:
    rows = [{(rename or {}).get(k, k): v for k, v in r.items()} for r in jnli_rows(real_data_dir)]
    card = b"---\nlicense: cc-by-sa-4.0\n---\n# JNLI mirror\n"
    return Repo({"data/validation-00000-of-00001.parquet": parquet_bytes(rows), "README.md": card})


def test_hub_source_is_declared_pinned_and_read_offline(fake_hub: Callable, real_data_dir: Path, jbench_main: Main,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = jnli_repo(real_data_dir, rename={"sentence1": "premise", "sentence2": "hypothesis"})
    hub = fake_hub({"me/jnli-mirror": repo})
    data = tmp_path / "data"
    assert jbench_main("data", "--data-dir", str(data), "--source", "jnli=hub:me/jnli-mirror@main",
                       "--map", "jnli.sentence1=premise", "--map", "jnli.sentence2=hypothesis", "--no-progress") == 0
    out, err = capsys.readouterr()
    assert f"source jnli validation: hub:me/jnli-mirror@{repo.commit}#validation  records=2434" in err
    row = next(line for line in out.splitlines() if line.startswith("| jnli | validation |"))
    assert "| 2434 | ok | manifest |" in row
    entry = json.loads((data / SOURCES_NAME).read_text())["sources"]["jnli"]
    assert entry["commit"] == repo.commit and len(entry["sha256"]) == 64
    assert entry["columns"] == {"sentence1": "premise", "sentence2": "hypothesis"}
    docs = load_split("jnli", "validation", data).docs
    assert docs == load_split("jnli", "validation", real_data_dir).docs  # same docs as the upstream file

    go_offline(monkeypatch)
    before = len(hub.requests)
    assert jbench_main("data", "--data-dir", str(data)) == 0
    assert "| 2434 | ok | manifest |" in capsys.readouterr().out and len(hub.requests) == before

    shutil.rmtree(tmp_path / "hf-cache")  # offline and no longer cached
    assert jbench_main("data", "--data-dir", str(data)) == 0  # the table still prints, saying why
    assert "cannot load: cannot get dataset repo me/jnli-mirror: not in the Hugging Face cache" in \
        capsys.readouterr().out
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=1 forbids"):
        load_split("jnli", "validation", data)


def test_private_marc_ja_mirror_in_the_parquet_export_layout(fake_hub: Callable, real_data_dir: Path,
                                                             jbench_main: Main, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A private repo in the Hub's parquet-export layout: sub-folder per config, folder per split, a revision with
    slashes (refs/convert/parquet), int labels; JGLUE's id lists still come from the data dir."""
    rows = [{"sentence": f"レビュー{i}", "label": i % 2, "review_id": f"R{i:06d}"} for i in range(5734)]
    repo = Repo({"MARC-ja/validation/0000.parquet": parquet_bytes(rows),
                 "JNLI/validation/0000.parquet": parquet_bytes(jnli_rows(real_data_dir))},
                token="hf_private", refs={"refs/convert/parquet": ""})
    repo.refs["refs/convert/parquet"] = repo.commit
    hub = fake_hub({"me/jglue-private": repo})
    monkeypatch.setenv("HF_TOKEN", "hf_private")
    data = tmp_path / "data"
    lists = "jglue/marc_ja-v1.1"
    shutil.copytree(real_data_dir / lists, data / lists)
    assert jbench_main("data", "--data-dir", str(data), "--source",
                       "marc_ja=hub:me/jglue-private/MARC-ja@refs/convert/parquet") == 0
    assert (f"source marc_ja validation: hub:me/jglue-private/MARC-ja@{repo.commit}#validation  records=5734"
            in capsys.readouterr().err)
    loaded = load_split("marc_ja", "validation", data)
    assert len(loaded.docs) == 5734 and loaded.docs[1] == {"review_id": "R000001", "sentence": "レビュー1", "label": 1}
    assert [f.path for f in loaded.files][1:] == [f"{lists}/filter_review_id_list/valid.txt",
                                                  f"{lists}/label_conv_review_id_list/valid.txt"]
    assert any("older shunk031 loader" in n for n in loaded.notes)
    fetched = {path for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path}
    assert fetched == {f"/datasets/me/jglue-private/resolve/{repo.commit}/MARC-ja/validation/0000.parquet"}


@pytest.mark.parametrize(("spec", "maps", "message"), [
    ("hub:me", [], "not a valid Hub dataset source: 'hub:me'"),
    ("hub:me/jnli-mirror@", [], "not a valid Hub dataset source"),
    ("hub:me/../x", [], "not a valid Hub dataset source"),
    ("https://example.org/x", [], "unsupported data source"),
    ("hub:me/nope@main", [], "cannot get dataset repo me/nope: repository not found"),
    ("hub:me/jnli-mirror@v9", [], "cannot get dataset repo me/jnli-mirror: revision not found"),
    ("hub:me/jnli-mirror", [], "jnli: the source has no column 'sentence1' (jbench needs sentence_pair_id"),
    ("hub:me/jnli-mirror", ["jnli.sentence1=nope"], "the source has no column 'nope' (named in its column map)"),
    ("hub:me/jnli-mirror", ["jnli.validation=dev"], "the source has no split 'dev' (mapped from validation)"),
    ("hub:me/jnli-mirror", ["jnli.colour=x"], "jnli has no split or field 'colour'"),
    ("hub:me/jnli-mirror", ["jcommonsenseqa.label=y"], "names jcommonsenseqa, which this command gives no --source"),
])
def test_bad_hub_sources_are_exit_2_and_change_nothing(fake_hub: Callable, real_data_dir: Path, jbench_main: Main,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture, spec: str,
                                                       maps: list[str], message: str) -> None:
    fake_hub({"me/jnli-mirror": jnli_repo(real_data_dir, rename={"sentence1": "premise"})})
    data = tmp_path / "data"
    args = [a for m in maps for a in ("--map", m)]
    assert jbench_main("data", "--data-dir", str(data), "--source", f"jnli={spec}", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "what to do:" in err and "Traceback" not in err
    assert not (data / SOURCES_NAME).exists()


def test_source_option_needs_a_name(jbench_main: Main, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert jbench_main("data", "--data-dir", str(tmp_path), "--source", "hub:me/x") == 2
    assert "--source expects KEY=VALUE" in capsys.readouterr().err
    assert jbench_main("data", "--data-dir", str(tmp_path), "--source", "nope=hub:me/x") == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert jbench_main("data", "--data-dir", str(tmp_path), "--map", "jnli.sentence1=x") == 2
    assert "--map only applies together with --source" in capsys.readouterr().err


def test_local_datasets_repo_json_layout_test_split(real_data_dir: Path, hf_env: Path, jbench_main: Main,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A folder in the Hub's XWinograd layout (JSON lines, split "test"): the reference uses test as validation."""
    want = load_split("xwinograd_ja", "validation", real_data_dir).docs
    folder = tmp_path / "xwinograd-ja"
    folder.mkdir()
    (folder / "test.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in want),
                                       encoding="utf-8")
    data = tmp_path / "data"
    assert jbench_main("data", "--data-dir", str(data), "--source", f"xwinograd_ja={folder}") == 0
    assert f"source xwinograd_ja validation: {folder}#test  records=959" in capsys.readouterr().err
    assert load_split("xwinograd_ja", "validation", data).docs == want

    # the pinned sha256 catches a changed source, like a changed file
    (folder / "test.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in want[::-1]),
                                       encoding="utf-8")
    with pytest.raises(DataError, match="checksum mismatch: source sha256"):
        load_split("xwinograd_ja", "validation", data)
    loaded = load_split("xwinograd_ja", "validation", data, allow_mismatch=True)
    assert loaded.files[0].mismatch and "MISMATCH ALLOWED" in " ".join(loaded.notes)


def test_source_lacking_a_split_falls_back_to_the_data_dir(real_data_dir: Path, hf_env: Path, tmp_path: Path) -> None:
    from jbench.data.declare import declare_source

    folder = tmp_path / "jcqa"
    folder.mkdir()
    shutil.copyfile(real_data_dir / "jglue/jcommonsenseqa-v1.1/valid-v1.1.json", folder / "validation.jsonl")
    data = tmp_path / "data"
    (data / "jglue/jcommonsenseqa-v1.1").mkdir(parents=True)
    shutil.copyfile(real_data_dir / "jglue/jcommonsenseqa-v1.1/train-v1.1.json",
                    data / "jglue/jcommonsenseqa-v1.1/train-v1.1.json")
    [valid] = declare_source(data, "jcommonsenseqa", "../jcqa")  # relative to the data dir
    assert valid.split == "validation" and len(valid.docs) == 1119
    train = load_split("jcommonsenseqa", "train", data)
    assert len(train.docs) == 8939 and train.files[0].expected == "official"
    assert any("not in its source ../jcqa; read from the data dir" in n for n in train.notes)


def test_bad_sources_file_is_one_error(tmp_path: Path) -> None:
    (tmp_path / SOURCES_NAME).write_text('{"sources": {"jnli": {"sourse": "hub:a/b"}}}')
    with pytest.raises(DataError, match="invalid data sources file"):
        load_split("jnli", "validation", tmp_path)


def test_eval_reads_a_hub_source(fake_hub: Callable, real_data_dir: Path, jbench_main: Main, tmp_path: Path,
                                 capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = jnli_repo(real_data_dir)
    fake_hub({"me/jnli-mirror": repo})
    data = tmp_path / "data"
    assert jbench_main("data", "--data-dir", str(data), "--source", "jnli=hub:me/jnli-mirror@main") == 0
    go_offline(monkeypatch)  # eval runs from the pinned snapshot in the HF cache
    capsys.readouterr()
    assert jbench_main("eval", "--tasks", "jnli", "--num-fewshot", "0", "--limit", "6", "--data-dir", str(data),
                       "--output-dir", str(tmp_path / "runs"), "--run-name", "r", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "jnli-1.3-0.3" in out or "jnli" in out
    text = (tmp_path / "runs" / "r" / "results.json").read_text(encoding="utf-8")
    assert f"hub:me/jnli-mirror@{repo.commit}#validation" in text


# ------------------------------------------------------------------ partial mirrors, one column for two fields


def jnli_folder(real_data_dir: Path, root: Path, n_train: int | None = None,
                rows: Callable[[dict], dict] = lambda r: r) -> Path:
    """A local JNLI folder in the ``datasets`` JSON-lines layout; ``n_train`` rows as its train split."""
    folder = root / "jnli-mirror"
    folder.mkdir()
    records = [rows(r) for r in jnli_rows(real_data_dir)]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (folder / "validation.jsonl").write_text(lines, encoding="utf-8")
    if n_train is not None:
        (folder / "train.jsonl").write_text("".join(lines.splitlines(keepends=True)[:n_train]), encoding="utf-8")
    return folder


def test_a_partial_source_is_declared_with_the_flag_and_marked(real_data_dir: Path, hf_env: Path, jbench_main: Main,
                                                               tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The advice of the count error can be followed: `jbench data --source ... --allow-data-mismatch` declares the
    30-row train split, and runs on it pass without the flag but carry the mismatch (‡)."""
    folder = jnli_folder(real_data_dir, tmp_path, n_train=30)
    data = tmp_path / "data"
    declare = ["data", "--data-dir", str(data), "--source", f"jnli={folder}"]
    assert jbench_main(*declare) == 2
    err = capsys.readouterr().err
    assert "record count mismatch: got 30 records, expected 20,073" in err
    assert f"jbench data --source jnli={folder} --allow-data-mismatch" in err and "re-download" not in err
    assert not (data / SOURCES_NAME).exists()

    assert jbench_main(*declare, "--allow-data-mismatch") == 0
    out, err = capsys.readouterr()
    assert "records=30" in err and "MISMATCH ALLOWED (‡): record count 30 != expected 20,073" in err
    assert "warning: jnli: declared as a partial source (train 30 records)" in err
    assert "records=2434" in err and err.count("MISMATCH") == 1  # the complete validation split is not marked
    assert "partial source declared with --allow-data-mismatch" in out  # the table says so too
    assert json.loads((data / SOURCES_NAME).read_text())["sources"]["jnli"]["allowed_records"] == {"train": 30}

    assert jbench_main("eval", "--tasks", "jnli", "--num-fewshot", "1", "--limit", "4", "--data-dir", str(data),
                       "--output-dir", str(tmp_path / "runs"), "--run-name", "r", "--no-progress") == 0
    assert "jnli-1.1-0.3 ‡" in capsys.readouterr().out
    files = json.loads((tmp_path / "runs" / "r" / "results.json").read_text(encoding="utf-8"))
    assert "record count 30 != expected 20,073 (partial source" in json.dumps(files, ensure_ascii=False)

    # a changed source is still caught (the sha256 is pinned), and the flag means nothing without --source
    (folder / "train.jsonl").write_text((folder / "train.jsonl").read_text(encoding="utf-8").splitlines(True)[0],
                                        encoding="utf-8")
    with pytest.raises(DataError, match="checksum mismatch: source sha256"):
        load_split("jnli", "train", data)
    assert jbench_main("data", "--data-dir", str(data), "--allow-data-mismatch") == 2
    assert "--allow-data-mismatch only applies together with --source" in capsys.readouterr().err


def test_two_fields_can_read_one_source_column(real_data_dir: Path, hf_env: Path, jbench_main: Main, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    def one_id(r: dict) -> dict:
        out = {k: v for k, v in r.items() if k not in ("sentence_pair_id", "yjcaptions_id")}
        return {"id": r["sentence_pair_id"], **out}

    folder = jnli_folder(real_data_dir, tmp_path, rows=one_id)
    data = tmp_path / "data"
    base = ["data", "--data-dir", str(data), "--source", f"jnli={folder}", "--map", "jnli.sentence_pair_id=id"]
    assert jbench_main(*base, "--map", "jnli.yjcaptions_id=id") == 0
    assert "source jnli validation: " in capsys.readouterr().err
    docs = load_split("jnli", "validation", data).docs
    want = load_split("jnli", "validation", real_data_dir).docs
    assert [d["sentence_pair_id"] for d in docs] == [d["sentence_pair_id"] for d in want]
    assert all(d["yjcaptions_id"] == d["sentence_pair_id"] for d in docs)

    # a field given two columns is the real mistake, and it is named
    assert jbench_main(*base, "--map", "jnli.sentence_pair_id=other") == 2
    err = capsys.readouterr().err
    assert "--map jnli.sentence_pair_id is given twice ('id' and 'other')" in err and "no column" not in err
