"""Where log lines go: jbench's own warnings on stderr, everything else in the run directory's ``log.txt``.

Why this module exists: a plain ``jbench eval`` used to print more library noise than jbench lines (torchao's
``.so`` load failures, torch's ``_pytree`` deprecations, transformers' FutureWarnings and "Loading weights" bars,
gptqmodel's banner on *stdout*), while jbench's own ``logging`` calls had no handler and were lost. The contract:

* stdout carries only jbench's tables or JSON; stderr only jbench's own lines (``warning: ...`` for its loggers'
  warnings) and its progress bars;
* library warnings and logs, and jbench's INFO lines, go to ``<run>/log.txt`` (:func:`run_log`); records made
  before a run directory is attached (imports, model loading) are buffered and written there when it is;
* ``--verbose`` (or ``JBENCH_VERBOSE=1``, inherited by child runs) also shows all of them on stderr, with the
  libraries' own progress bars.

Libraries that install their own stderr handlers (torch at import, transformers on first use) are re-pointed at
the root logger right after they are imported, by a small import hook, so that ``jbench tasks`` does not pay for
importing torch. Output printed straight to the file descriptors (gptqmodel's banner, C code) is captured with
:func:`captured_output`.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.abc
import importlib.machinery
import io
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, ContextManager, Iterator

#: the log file written into each run directory.
LOG_FILE = "log.txt"

#: records kept while no run log is attached (model loading happens before the run directory may exist).
BUFFER_RECORDS = 20000

#: library loggers whose WARNING+ records reach the log (their INFO is mostly config dumps).
LIBRARY_LOGGERS = ("transformers", "torch", "torchao", "bitsandbytes", "gptqmodel", "accelerate", "huggingface_hub",
                   "llama_cpp", "llama-cpp-python", "vllm", "lm_eval", "datasets", "optimum", "py.warnings")

_FILE_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class _State:
    configured = False
    verbose = False
    sink: "_RunLogHandler | None" = None
    terminal: "_TerminalHandler | None" = None
    hook: "_ImportHook | None" = None
    keep: list[Any] = []


_state = _State()


def _env_verbose() -> bool:
    return os.environ.get("JBENCH_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


class _RunLogHandler(logging.Handler):
    """Writes every record to the attached run log; buffers records while none is attached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(_FILE_FORMAT)
        self.pending: collections.deque[logging.LogRecord] = collections.deque(maxlen=BUFFER_RECORDS)
        self.streams: list[io.TextIOBase] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.streams:
                stream = self.streams[-1]
                stream.write(self.format(record) + "\n")
                stream.flush()
            else:
                self.pending.append(record)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)

    def attach(self, path: Path) -> io.TextIOBase:
        stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by detach
        self.acquire()
        try:
            while self.pending:
                stream.write(self.format(self.pending.popleft()) + "\n")
            stream.flush()
            self.streams.append(stream)
        finally:
            self.release()
        return stream

    def detach(self, stream: io.TextIOBase) -> None:
        self.acquire()
        try:
            if stream in self.streams:
                self.streams.remove(stream)
        finally:
            self.release()
        stream.close()


class _TerminalHandler(logging.Handler):
    """stderr (looked up at each record, so progress-bar proxies and test captures get it): jbench's warnings as
    ``warning: ...``; with --verbose, every record."""

    def emit(self, record: logging.LogRecord) -> None:
        own = record.name == "jbench" or record.name.startswith("jbench.")
        if own and record.levelno < logging.WARNING and not _state.verbose:
            return
        if not own and not _state.verbose:
            return
        try:
            msg = record.getMessage()
            if own:
                line = f"{record.levelname.lower()}: {msg}"
            elif record.name == "py.warnings":
                line = msg.rstrip("\n")
            else:
                line = f"{record.name}: {record.levelname.lower()}: {msg}"
            if record.exc_info and not own:
                line += "\n" + logging.Formatter().formatException(record.exc_info)
            print(line, file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001
            self.handleError(record)


# -- libraries that install their own stderr handlers ------------------------------------------------------------


def _adopt_torch() -> None:
    """torch's ``_init_logs`` (end of ``import torch``) gives its loggers a stderr handler and stops propagation;
    route them to the root logger instead (unless TORCH_LOGS asks for torch's own output)."""
    if os.environ.get("TORCH_LOGS"):
        return
    try:
        from torch._logging import _internal as tl
    except ImportError:
        return
    for qname in tl.log_registry.get_log_qnames():
        logger = logging.getLogger(qname)
        for handler in [h for h in logger.handlers if tl._is_torch_handler(h)]:
            logger.removeHandler(handler)
        logger.propagate = True


def _adopt_transformers() -> None:
    """transformers' default stderr handler off, propagation on, its tqdm bars off (unless verbose)."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:
        return
    tlog.disable_default_handler()
    tlog.enable_propagation()
    if not _state.verbose:
        tlog.disable_progress_bar()


def _adopt_hf_hub() -> None:
    """huggingface_hub's bars (downloads) off unless verbose; its logger propagates to ours."""
    try:
        from huggingface_hub import utils as hub_utils
    except ImportError:
        return
    if not _state.verbose:
        hub_utils.disable_progress_bars()
    logging.getLogger("huggingface_hub").propagate = True


def _adopt_hf_hub_logging() -> None:
    """huggingface_hub's own stderr handler, added when its (lazily imported) logging module runs, off: its records
    (``'[Errno -2] ...' thrown while requesting HEAD``, ``Retrying in 8s [Retry 5/5]``) reach only ours, so log.txt,
    and stderr only with --verbose."""
    logger = logging.getLogger("huggingface_hub")
    for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
        logger.removeHandler(handler)
    logger.propagate = True


def _adopt_llama_cpp() -> None:
    """llama.cpp's C log callback (llama-cpp-python prints it raw on stderr, and logs everything until a model is
    opened with verbose=False) -> the ``llama_cpp`` logger, one record per line."""
    import ctypes

    import llama_cpp

    # ggml.h's levels (llama-cpp-python's own table predates their renumbering): 0 none, 1 debug, 2 info, 3 warn,
    # 4 error, 5 continues the previous record
    levels = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
    logger = logging.getLogger("llama_cpp")
    pending = {"level": logging.INFO, "text": ""}

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != 5:
            pending["level"] = levels.get(level, logging.INFO)
        pending["text"] += text.decode("utf-8", errors="replace")
        *lines, pending["text"] = pending["text"].split("\n")
        for line in lines:
            if line.strip():
                logger.log(pending["level"], "%s", line.rstrip())

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _state.keep.append(callback)  # ctypes callbacks must outlive their registration


@contextlib.contextmanager
def _after(fn: Callable[[], None]) -> Iterator[None]:
    yield
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - a library's private API moved: keep its noise rather than fail
        logging.getLogger(__name__).info("could not adopt a library's logging (%s)", err)


def _quiet_import() -> ContextManager[None]:
    """gptqmodel prints a banner (logbar, on stdout) while it is imported."""
    return captured_output("gptqmodel")


#: module -> context manager factory wrapped around the module's execution (the first time it is imported).
_IMPORT_HOOKS: dict[str, Callable[[], ContextManager[None]]] = {
    "torch": lambda: _after(_adopt_torch),
    "transformers.utils.logging": lambda: _after(_adopt_transformers),
    "huggingface_hub": lambda: _after(_adopt_hf_hub),
    "huggingface_hub.utils.logging": lambda: _after(_adopt_hf_hub_logging),
    "gptqmodel": _quiet_import,
    "llama_cpp": lambda: _after(_adopt_llama_cpp),
}


class _HookedLoader(importlib.abc.Loader):
    """Runs the real loader inside the module's hook (the first time it is executed), then puts the real loader
    back on the module."""

    def __init__(self, loader: Any, owner: "_ImportHook") -> None:
        self._loader, self._owner = loader, owner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        hook = self._owner.hooks.pop(module.__name__, None)
        try:
            with hook() if hook is not None else contextlib.nullcontext():
                self._loader.exec_module(module)
        finally:
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _ImportHook(importlib.abc.MetaPathFinder):
    """Finds the hooked modules through the other finders and wraps their loader. A hook fires when the module is
    executed, not when it is found: ``importlib.util.find_spec`` (transformers' availability checks) only finds."""

    def __init__(self, hooks: dict[str, Callable[[], ContextManager[None]]]) -> None:
        self.hooks = dict(hooks)

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, self)
        return spec


# -- public API -----------------------------------------------------------------------------------------------------


def setup(verbose: bool = False) -> None:
    """Configure logging once per process (later calls only switch ``verbose`` on or off).

    Called by ``jbench.cli.main`` before the command runs, so that even import-time noise is caught."""
    verbose = bool(verbose) or _env_verbose()
    _state.verbose = verbose
    if verbose:
        os.environ["JBENCH_VERBOSE"] = "1"  # child runs (`jbench compare`) inherit it
    if _state.configured:
        return
    _state.configured = True
    if not verbose:
        # read by huggingface_hub (and through it by transformers) at import: no tqdm bars unless asked for
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    root = logging.getLogger()
    _install_sink()
    _state.terminal = _TerminalHandler(logging.DEBUG)
    root.addHandler(_state.terminal)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    _state.hook = _ImportHook({k: v for k, v in _IMPORT_HOOKS.items() if k not in sys.modules})
    sys.meta_path.insert(0, _state.hook)
    for name, hook in _IMPORT_HOOKS.items():  # already imported (in-process callers, tests): adopt them now
        if name in sys.modules and name != "gptqmodel":
            with hook():
                pass


def _install_sink() -> "_RunLogHandler":
    """The root handler behind :func:`run_log` (also used without :func:`setup`: in-process callers and tests get a
    log.txt without jbench taking over their terminal or warnings)."""
    if _state.sink is None:
        _state.sink = _RunLogHandler()
        logging.getLogger().addHandler(_state.sink)
        jbench_logger = logging.getLogger("jbench")
        if jbench_logger.level == logging.NOTSET or jbench_logger.level > logging.INFO:
            jbench_logger.setLevel(logging.INFO)
    return _state.sink


@contextlib.contextmanager
def run_log(run_dir: Path, name: str = LOG_FILE) -> Iterator[Path]:
    """Append every log record to ``run_dir/name`` while the block runs, starting with the ones buffered so far."""
    sink = _install_sink()
    path = Path(run_dir) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream: io.TextIOBase | None = sink.attach(path)
    except OSError:  # an unwritable run directory is reported by the run itself, as one message
        stream = None
    try:
        yield path
    finally:
        if stream is not None:
            sink.detach(stream)


def _std_fd(stream: Any, default: int) -> int:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return default


@contextlib.contextmanager
def captured_output(source: str, *, stderr: bool = False) -> Iterator[None]:
    """Send what a library prints (``print``, C ``printf``, banners, progress redraws) to the log as ``source``
    instead of the terminal: stdout (and stderr if asked) are pointed at a temporary file at the file-descriptor
    level for the block. stdout must stay clean for tables; with --verbose the lines also reach stderr, after
    the block."""
    targets = [(sys.stdout, 1)] + ([(sys.stderr, 2)] if stderr and not _state.verbose else [])
    with tempfile.TemporaryFile() as tmp:
        saved: list[tuple[int, int]] = []
        for stream, default in targets:
            with contextlib.suppress(Exception):
                stream.flush()
            fd = _std_fd(stream, default)
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
            except OSError:
                continue
        py_out = io.StringIO()
        try:
            with contextlib.redirect_stdout(py_out):
                yield
        finally:
            for (stream, _), (fd, copy) in zip(targets, saved):
                with contextlib.suppress(Exception):
                    stream.flush()
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace") + py_out.getvalue()
            log_lines(source, text)


def log_lines(source: str, text: str) -> None:
    """Log captured terminal output line by line (progress redraws: only the last state of a line)."""
    logger = logging.getLogger(f"{source}.output")
    logger.setLevel(logging.INFO)
    for raw in text.splitlines():
        line = _ANSI.sub("", raw.rsplit("\r", 1)[-1]).rstrip()
        if line.strip():
            logger.info("%s", line)
