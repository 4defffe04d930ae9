"""Downloads (pooch) against a loopback HTTP server laid out like a data dir (never the internet)."""

from __future__ import annotations

import hashlib
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from jbench.data import DATASETS, download_datasets, load_split
from jbench.errors import DataError

TSV = "xwinograd/dataset.tsv"
FILTER_LIST = "jglue/marc_ja-v1.1/filter_review_id_list/valid.txt"
CONV_LIST = "jglue/marc_ja-v1.1/label_conv_review_id_list/valid.txt"

Serve = Callable[[Path], str]


@pytest.fixture(autouse=True)
def _no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures here are permanent (404, refused): no back-off sleeps (retries: tests/test_hub_data.py)."""
    monkeypatch.setenv("JBENCH_DOWNLOAD_RETRIES", "0")


def mirror_of(src: Path, dst: Path, *rels: str) -> Path:
    """A mirror directory holding copies of ``rels`` from ``src``."""
    for rel in rels:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    return dst


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def test_download_verifies_checksum_and_counts(tmp_path: Path, real_data_dir: Path, http_server: Serve) -> None:
    url = http_server(mirror_of(real_data_dir, tmp_path / "mirror", TSV))
    target = tmp_path / "data"
    [info] = download_datasets(["xwinograd_ja"], target, mirror=url)
    assert info.path == TSV and info.expected == "official" and info.records == 959 and info.mismatch is None
    assert info.sha256 == DATASETS["xwinograd_ja"].splits["validation"][0].sha256
    assert (target / TSV).read_bytes() == (real_data_dir / TSV).read_bytes()
    assert leftovers(target) == []
    assert len(load_split("xwinograd_ja", "validation", target).docs) == 959


def test_present_verified_file_is_not_fetched_again(tmp_path: Path, real_data_dir: Path, http_server: Serve) -> None:
    target = mirror_of(real_data_dir, tmp_path / "data", TSV)
    empty = tmp_path / "empty"
    empty.mkdir()
    [info] = download_datasets(["xwinograd_ja"], target, mirror=http_server(empty))  # a fetch would 404
    assert info.expected == "official"


def test_mirror_from_environment(tmp_path: Path, real_data_dir: Path, http_server: Serve,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = http_server(mirror_of(real_data_dir, tmp_path / "mirror", "jglue/jcommonsenseqa-v1.1/train-v1.1.json",
                                "jglue/jcommonsenseqa-v1.1/valid-v1.1.json"))
    monkeypatch.setenv("JBENCH_DATA_MIRROR", url + "/")
    infos = download_datasets(["jcommonsenseqa"], tmp_path / "data")
    assert [(i.path, i.records) for i in infos] == [("jglue/jcommonsenseqa-v1.1/train-v1.1.json", 8939),
                                                    ("jglue/jcommonsenseqa-v1.1/valid-v1.1.json", 1119)]


def test_corrupted_payload_is_rejected_and_leaves_nothing(tmp_path: Path, real_data_dir: Path,
                                                          http_server: Serve) -> None:
    mirror = mirror_of(real_data_dir, tmp_path / "mirror", TSV)
    data = bytearray((mirror / TSV).read_bytes())
    data[1000] ^= 0x01
    (mirror / TSV).write_bytes(bytes(data))
    target = tmp_path / "data"
    with pytest.raises(DataError) as exc:
        download_datasets(["xwinograd_ja"], target, mirror=http_server(mirror))
    assert "fails its checksum" in str(exc.value) and hashlib.sha256(data).hexdigest() in str(exc.value)
    assert not (target / TSV).exists() and leftovers(target) == []


def test_http_404_is_a_clear_error(tmp_path: Path, http_server: Serve) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    url = http_server(empty)
    with pytest.raises(DataError) as exc:
        download_datasets(["xwinograd_ja"], tmp_path / "data", mirror=url)
    assert "HTTP 404" in str(exc.value) and f"{url}/{TSV}" in str(exc.value)
    assert leftovers(tmp_path / "data") == []


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match="download failed"):
        download_datasets(["xwinograd_ja"], tmp_path / "data", mirror=f"http://127.0.0.1:{port}")
    assert leftovers(tmp_path / "data") == []


def test_existing_bad_file_needs_force(tmp_path: Path, real_data_dir: Path, http_server: Serve) -> None:
    url = http_server(mirror_of(real_data_dir, tmp_path / "mirror", TSV))
    target = tmp_path / "data"
    (target / "xwinograd").mkdir(parents=True)
    (target / TSV).write_bytes(b"jp\tbroken\n")
    with pytest.raises(DataError, match="--force"):
        download_datasets(["xwinograd_ja"], target, mirror=url)
    [info] = download_datasets(["xwinograd_ja"], target, mirror=url, force=True)
    assert info.records == 959 and (target / TSV).read_bytes() == (real_data_dir / TSV).read_bytes()


def test_marc_lists_download_but_the_text_cannot(tmp_path: Path, sample_dir: Path, http_server: Serve) -> None:
    url = http_server(mirror_of(sample_dir, tmp_path / "mirror", FILTER_LIST, CONV_LIST))
    target = tmp_path / "data"
    with pytest.raises(DataError) as exc:
        download_datasets(["marc_ja"], target, mirror=url)
    msg = str(exc.value)
    assert "cannot download" in msg and "Amazon" in msg and FILTER_LIST in msg
    assert (target / FILTER_LIST).exists() and (target / CONV_LIST).exists()


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        download_datasets(["nope"], tmp_path)


def test_manifest_in_target_dir_is_the_reference(tmp_path: Path, sample_dir: Path, http_server: Serve) -> None:
    """A data dir with a manifest (e.g. a copy of the sample) verifies downloads against it."""
    target = tmp_path / "data"
    shutil.copytree(sample_dir, target)
    (target / TSV).unlink()
    url = http_server(mirror_of(sample_dir, tmp_path / "mirror", TSV))
    [info] = download_datasets(["xwinograd_ja"], target, mirror=url)
    assert info.expected == "manifest" and info.records == 40
