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
    """The real evaluation data: $JBENCH_DATA_DIR, else ../shared/data beside the checkout. In CI (CI=true) its
    absence is a failure, never a skip; on a developer machine without the data these tests are skipped."""
    value = os.environ.get("JBENCH_DATA_DIR")
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    if value:
        return Path(value).resolve()  # the overlay symlinks to it: a relative target would dangle
    if beside.is_dir():
        return beside
    if os.environ.get("CI"):
        pytest.fail("JBENCH_DATA_DIR is not set in CI: the real-data tests cannot run")
    pytest.skip("JBENCH_DATA_DIR is not set (and no ../shared/data beside the checkout)")


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


@pytest.fixture
def jbench_main(monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """``jbench_main("eval", *args) -> exit code``: the real console entry point (``jbench.cli.main``, with its
    error handler) run in-process, so a case costs a model load, not a Python start-up."""
    import sys

    from jbench.cli import main

    def run(*argv: str) -> int:
        monkeypatch.setattr(sys, "argv", ["jbench", *argv])
        with pytest.raises(SystemExit) as exit_:
            main()
        return int(exit_.value.code or 0)

    return run


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


# --- a data dir with every real file from JBENCH_DATA_DIR, plus the sample's made-up files for what is missing ---

def build_overlay_data_dir(real: Path, sample: Path, out: Path) -> Path:
    """Real files (symlinked, verified against the official registry) + the bundled sample's files for splits the
    real data lacks (JNLI/JSQuAD train, MARC-ja, JAQKET v2), listed in the overlay's manifest."""
    import json
    import shutil

    manifest = json.loads((sample / "jbench-manifest.json").read_text(encoding="utf-8"))
    for f in real.rglob("*"):
        if f.is_file():
            dst = out / f.relative_to(real)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(f)
    files = {}
    for rel, entry in manifest["files"].items():
        if not (out / rel).exists():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample / rel, out / rel)
            files[rel] = entry
    (out / "jbench-manifest.json").write_text(json.dumps(
        {"description": "test overlay: real data + the bundled sample's made-up files", "madeup": False,
         "files": files}, ensure_ascii=False, indent=1), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def overlay_data_dir(real_data_dir: Path, sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_overlay_data_dir(real_data_dir, sample_dir, tmp_path_factory.mktemp("overlay-data"))


# --- the fast inner loop: `make test-fast` runs `-m "not slow"` --------------------------------------------------

#: modules whose every test loads a model, runs a scorer or starts a jbench process
SLOW_MODULES = {"test_eval_e2e", "test_families", "test_gate", "test_gguf", "test_hf_scorer", "test_lmeval_backend",
                "test_quantized", "test_quiet", "test_tiny", "test_suites", "test_reliability", "test_cache_verify",
                "test_every_task", "test_tokenizer", "test_run_store", "test_bad_input", "test_vllm_backend", "test_chat_template", "test_reproduce",
                "test_wandb_log", "test_sweep", "test_hub_unreachable"}
#: fixtures that build or load a model (a test using one is slow wherever it lives)
SLOW_FIXTURES = {"tiny_models", "stand_ins", "suite_run", "family_run", "all_tasks_run", "gguf_files", "tiny_test_texts"}
#: single tests that start a jbench process in an otherwise fast module
SLOW_TESTS = {"test_exit_paths_through_a_real_process", "test_import_is_cheap_and_names_resolve",
              "test_a_backend_installed_outside_jbench_is_found_by_entry_point", "test_eval_reads_a_hub_source",
              "test_a_partial_source_is_declared_with_the_flag_and_marked"}
#: tests of otherwise slow modules that touch no model and start no process (kept in the fast loop)
FAST_TESTS = {"test_the_list_is_not_empty", "test_jbench_additions_are_marked", "test_run_names_are_names",
              "test_staged_run_replaces_only_on_publish", "test_result_files_follow_the_umask",
              "test_default_run_names_differ_for_same_named_folders",
              # test_vllm_backend's input checks (no engine, no model)
              "test_unknown_backend_is_one_message", "test_a_variant_vllm_cannot_load_is_refused_before_loading",
              "test_missing_vllm_exits_2_with_the_install_hint", "test_head_dim_below_32_is_named",
              "test_the_backend_is_in_the_plan_run_name_and_cache_key",
              "test_engine_arguments_pass_through_and_reserved_ones_are_refused",
              "test_the_comparison_report_names_the_engine_and_kernel",
              # test_sweep's file checks (nothing starts: the file is validated before Ray)
              "test_sweep_bad_yaml_is_one_message_with_the_line",
              "test_sweep_unknown_model_variant_and_task_are_reported_together",
              "test_sweep_schema_errors_name_the_field", "test_sweep_num_cpus_cannot_go_with_an_address",
              "test_sweep_dry_run_lists_runs_and_resources", "test_sizes_parse",
              "test_sweep_unreachable_address_is_one_message", "test_readme_sweep_example_validates"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `slow` every test that builds a model or starts a subprocess (by module, fixture or its own mark)."""
    slow = pytest.mark.slow
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if getattr(item, "module", None) else ""
        name = getattr(item, "originalname", item.name)
        heavy = (module in SLOW_MODULES and name not in FAST_TESTS) or name in SLOW_TESTS or bool(
            SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))
        if heavy and not item.get_closest_marker("slow"):
            item.add_marker(slow)
