"""Carrying out a sweep on Ray: one Ray task per (model, variant), asking for the resources the sweep file gives.

Why Ray rather than a home-made scheduler: it places each task on a node with the GPUs, CPUs and memory it asks for,
retries a task whose worker died (``max_retries``) or raised (``retry_exceptions``), and the same code runs on a
laptop (a local Ray started here) and on a cluster (``--address``). jbench adds what Ray cannot know: a run is the
same run directory ``jbench eval`` makes, under an output directory every node shares, so

* a finished run (its results.json records the very plan asked for, and the weights the model names now) is
  skipped before anything is scheduled;
* a run that crashed resumes through its request cache (``execute_plan``), on the retry or on a rerun of the sweep,
  with numbers identical to an uninterrupted run;
* a run that still fails after its retries is reported by name with its error, and the sweep exits 2.

A user's mistake met on a node (a GPU asked for that is not there) is a :class:`~jbench.errors.JBenchError`: it is
reported and not retried, since trying again cannot fix it.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from jbench.errors import BackendMissing, Interrupted, JBenchError
from jbench.sweep import Sweep, SweepError, SweepJob, SweepRun

log = logging.getLogger(__name__)

#: object store of a local Ray: jbench passes only small dicts through it (the default reserves 30% of memory)
LOCAL_OBJECT_STORE_BYTES = 128 << 20


@dataclass
class RunOutcome:
    """What became of one run of the sweep."""

    name: str
    status: str                  # "done", "skipped" (finished before), "failed"
    seconds: float | None = None
    node: str | None = None
    device: str | None = None
    error: str | None = None


def is_finished(run: SweepRun, run_dir: Path, device: str) -> bool:
    """The run directory holds a finished run of this very plan, made from the weights its model names now. With
    ``device: auto`` the device a node chose is not part of the question (a run finished on cpu is not redone
    because a GPU is now there)."""
    from jbench.plan import stored_plan

    stored = stored_plan(run_dir)
    if stored is None:
        return False
    want = copy.deepcopy(run.plan)
    want["model"]["device"] = (stored.get("model") or {}).get("device") if device == "auto" else device
    return stored == want and _fresh_weights(run, run_dir)


def _fresh_weights(run: SweepRun, run_dir: Path, out: TextIO | None = None) -> bool:
    """The finished run in ``run_dir`` was made from the weights its model names now (a Hub ref that moved, or a
    checkpoint overwritten in place, is rerun, as ``jbench compare`` does); says why not on ``out`` (stderr)."""
    from jbench.run_identity import stale_weights_reason

    stale = stale_weights_reason(run.plan["model"], run_dir)
    if stale is not None:
        print(f"sweep: rerunning {run.name}: {stale}", file=out or sys.stderr, flush=True)
    return stale is None


def run_job(runs: list[dict[str, Any]], device: str, output_dir: str) -> list[dict[str, Any]]:
    """The body of one Ray task (runs on a worker): each run of one (model, variant), through the same
    validate-then-execute path as ``jbench eval``, resuming its request cache. Errors other than a JBenchError
    propagate, so Ray retries the task; the runs it had finished are then skipped."""
    from jbench.devices import resolve_device
    from jbench.execute import execute_plan
    from jbench.plan import RunPlan, stored_plan
    from jbench.validate import validate_plan

    resolved, _ = resolve_device(device)
    out: list[dict[str, Any]] = []
    for raw in runs:
        run = SweepRun(**raw)
        run_dir = Path(output_dir) / run.name
        plan = RunPlan(**copy.deepcopy(run.plan))
        plan.model["device"] = resolved
        t0 = time.perf_counter()
        here = {"node": socket.gethostname(), "device": resolved}
        if stored_plan(run_dir) == asdict(plan) and _fresh_weights(run, run_dir):
            out.append(asdict(RunOutcome(run.name, "skipped", **here)))
            continue
        try:
            validate_plan(plan, run_dir)
            execute_plan(plan, run_dir, show_progress=False)
        except JBenchError as err:
            out.append(asdict(RunOutcome(run.name, "failed", error=str(err), **here)))
            continue
        out.append(asdict(RunOutcome(run.name, "done", seconds=round(time.perf_counter() - t0, 1), **here)))
    return out


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise BackendMissing("jbench sweep needs Ray, which is not installed",
                             fix='make install EXTRAS=...,sweep (or pip install "jbench[sweep]")') from err
    return ray


def start_ray(address: str | None, num_cpus: int | None) -> Any:
    """Connect to ``address`` or start a local Ray with ``num_cpus`` CPUs; quiet (run logs are in each run dir).
    Returns the ``ray`` module. Ray reads its settings from the environment when imported, so they are set first."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        _probe(address)
        _use_token_auth_if_available()
    ray = _import_ray()
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR, "namespace": "jbench-sweep"}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            # "local": a new Ray of this sweep's own, even where `ray start` left one running (or its address file)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"--address {address}" if address else "local Ray"
        raise SweepError(f"cannot start or reach Ray: {str(err).splitlines()[0][:300]}", where=where,
                         fix="start the cluster first (`ray start --head` on the head node, `ray start --address "
                             "HEAD:6379` on the others) and pass --address HEAD:6379, or omit --address for a "
                             "local Ray on this machine") from err
    return ray


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT address answers on TCP; otherwise one clear error now (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray://...: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise SweepError(f"no Ray cluster answers at {address} ({err.strerror or err})", where=f"--address {address}",
                         fix="start the head with `ray start --head --port PORT` (and the workers with `ray start "
                             "--address HEAD:PORT`), check the host and port, or omit --address for a local Ray")


def _use_token_auth_if_available() -> None:
    """Ray 2.60 clusters started with ``ray start --head`` require a token whenever one exists on the head
    (``~/.ray/auth_token``), but a client connecting by address sends it only with ``RAY_AUTH_MODE=token``: without
    this, a correct address fails after a minute of retries. An explicit RAY_AUTH_MODE is left alone."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def unschedulable(ray: Any, jobs: list[SweepJob]) -> list[str]:
    """The jobs no node of the cluster can hold (they would wait forever): one line each."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    out = []
    for job in jobs:
        need = {"CPU": job.resources.num_cpus, "GPU": job.resources.num_gpus, "memory": job.resources.memory or 0}
        if not any(all(node.get(k, 0) >= v for k, v in need.items() if v) for node in nodes):
            have = "; ".join(f"CPU {n.get('CPU', 0):g}, GPU {n.get('GPU', 0):g}, memory {n.get('memory', 0) / 2**30:.1f}"
                             f" GiB" for n in nodes) or "no live node"
            out.append(f"{job.key} asks for CPU {need['CPU']:g}, GPU {need['GPU']:g}, memory "
                       f"{need['memory'] / 2**30:.1f} GiB; nodes: {have}")
    return out


def _fmt_eta(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def execute_sweep(sweep: Sweep, *, address: str | None = None, num_cpus: int | None = None,
                  out: TextIO | None = None) -> list[RunOutcome]:
    """Run every unfinished run of ``sweep`` on Ray and return one outcome per run, in sweep order. Progress (runs
    done k/N with an ETA) goes to ``out`` (stderr)."""
    out = out or sys.stderr
    outcomes: dict[str, RunOutcome] = {}
    todo: list[tuple[SweepJob, list[SweepRun]]] = []
    for job in sweep.jobs:
        pending = []
        for run in job.runs:
            if is_finished(run, sweep.output_dir / run.name, sweep.device):
                outcomes[run.name] = RunOutcome(run.name, "skipped")
            else:
                pending.append(run)
        if pending:
            todo.append((job, pending))
    total, n_todo = len(sweep.runs), sum(len(p) for _, p in todo)
    print(f"sweep: {total} run{'s' if total != 1 else ''}, {total - n_todo} already finished (skipped), {n_todo} "
          f"to run as {len(todo)} Ray task{'s' if len(todo) != 1 else ''}; stored in {sweep.output_dir}", file=out)
    if todo:
        _run_on_ray(sweep, todo, outcomes, address=address, num_cpus=num_cpus, out=out, done=total - n_todo)
    return [outcomes[r.name] for r in sweep.runs]


def _run_on_ray(sweep: Sweep, todo: list[tuple[SweepJob, list[SweepRun]]], outcomes: dict[str, RunOutcome], *,
                address: str | None, num_cpus: int | None, out: TextIO, done: int) -> None:
    import contextlib

    # Ray's driver threads print cluster events (a worker that died) on stdout: stdout is for the leaderboard only
    with contextlib.redirect_stdout(sys.stderr):
        ray = start_ray(address, num_cpus)
        try:
            _wait_for_runs(ray, sweep, todo, outcomes, address=address, out=out, done=done)
        finally:
            ray.shutdown()


def _wait_for_runs(ray: Any, sweep: Sweep, todo: list[tuple[SweepJob, list[SweepRun]]],
                   outcomes: dict[str, RunOutcome], *, address: str | None, out: TextIO, done: int) -> None:
    total = len(sweep.runs)
    try:
        stuck = unschedulable(ray, [job for job, _ in todo])
        if stuck and not address:
            raise SweepError("no node of the local Ray can hold these runs:\n  " + "\n  ".join(stuck),
                             where=f"{sweep.path}: resources",
                             fix="lower resources (num_gpus, num_cpus, memory) or run on a cluster with --address")
        for line in stuck:  # a cluster may autoscale: say so, and wait
            print(f"warning: no node can hold this run yet (waiting for the cluster to grow): {line}", file=out)
        task = ray.remote(max_calls=1)(run_job)  # a fresh process per (model, variant): memory freed, peak measured
        refs = {}
        for job, pending in todo:
            opts = {**job.resources.ray_options(), "max_retries": sweep.retries, "retry_exceptions": True,
                    "name": f"jbench {job.key}"}
            ref = task.options(**opts).remote([asdict(r) for r in pending], sweep.device, str(sweep.output_dir))
            refs[ref] = (job, pending)
        t0, ran = time.monotonic(), 0
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            job, pending = refs.pop(ready[0])
            try:
                results = [RunOutcome(**r) for r in ray.get(ready[0])]
            except ray.exceptions.RayError as err:
                cause = getattr(err, "cause", None)  # RayTaskError: the exception the run raised on its node
                first = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else next(
                    (ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
                reason = f"failed after {sweep.retries} retr{'y' if sweep.retries == 1 else 'ies'}: {first[:400]}"
                results = [RunOutcome(r.name, "failed", error=reason) for r in pending]
            for res in results:
                outcomes[res.name] = res
                done, ran = done + 1, ran + 1
                left = total - done
                eta = f", ETA {_fmt_eta((time.monotonic() - t0) / ran * left)}" if left else ""
                what = {"done": f"done in {res.seconds} s on {res.node} ({res.device})",
                        "skipped": "already finished", "failed": "FAILED"}[res.status]
                print(f"sweep: runs done {done}/{total}: {res.name} {what}{eta}", file=out)
    except KeyboardInterrupt as err:
        raise Interrupted("interrupted", where=str(sweep.output_dir)) from err
