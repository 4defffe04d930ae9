"""Shared fixtures. Keep this generic: other modules' tests add theirs here too."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real evaluation data (CI sets JBENCH_DATA_DIR=/work/shared/data); skip only when it is unset."""
    value = os.environ.get("JBENCH_DATA_DIR")
    if not value:
        pytest.skip("JBENCH_DATA_DIR is not set")
    return Path(value)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled sample data dir."""
    from jbench.data import sample_data_dir

    return sample_data_dir()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def http_server() -> Iterator[Callable[[Path], str]]:
    """``serve(directory) -> base_url``: a threaded HTTP server on 127.0.0.1 with an ephemeral port, shut down
    after the test. Never reaches beyond loopback."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


# --- tiny HF models for the scorer / tokenizer tests (test_hf_scorer.py, test_tokenizer.py, test_tiny.py) ---

TINY_TEST_TEXTS: list[str] = [
    f"{s}は{p}で{a}。{extra}"
    for i, (s, extra) in enumerate([("猫", ""), ("犬", "とても楽しい！"), ("先生", "Hello world."), ("子ども", "😀"),
                                    ("東京の人", "毎日  です"), ("私の友達", "\tタブ"), ("学生", "数字は123です。"),
                                    ("鳥", "ようこそ")])
    for j, p in enumerate(["公園", "学校", "図書館", "駅", "海", "山", "家", "店"])
    for a in [["本を読みます", "ご飯を食べます", "歌を歌います", "走ります", "写真を撮ります", "寝ます"][(i + j) % 6]]
] + [
    "質問：主に子ども向けのもので、イラストのついた物語が書かれているものはどれ？\n答え：絵本",
    "質問：数字の１を表すときに使う体は？\n答え：人差し指",
    "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。",
    "The quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """arch -> directory of a deterministic tiny model (gpt_neox: rinna style, llama: Llama-2 style, qwen2:
    byte-level BPE), built once per test session from ``TINY_TEST_TEXTS``."""
    from jbench.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(root / arch, arch=arch, texts=TINY_TEST_TEXTS, vocab_size=400, seed=0)
            for arch in ("gpt_neox", "llama", "qwen2")}


@pytest.fixture(scope="session")
def tiny_test_texts() -> list[str]:
    """The corpus the ``tiny_models`` fixture was trained on."""
    return list(TINY_TEST_TEXTS)
