"""Benchmark-number regression gate: freeze a run as a reviewable baseline, then check later runs against it.

A baseline (``results/baselines/<name>.json``, committed to git) holds what decides whether two runs are
comparable (task version, prompt version, shots, data sha256s), the numbers themselves (value, stderr, n per
metric), the model identity, and, for ``exact`` mode, one line per example (doc_id, prediction, prompt hash,
loglikelihoods as repr floats) so that a changed prompt or score shows up as a one-line diff in review.

Two check modes:

* ``exact``: for refactors that must not move anything. Every metric value and every per-example prediction and
  prompt hash must be ``==``; per-example loglikelihoods must agree within ``LL_ATOL`` (absolute), because fp32 CPU
  kernels are not bit-identical across CPU types, thread counts and math-library versions (see ``LL_ATOL``).
* ``stat``: for changes that may legitimately move numbers a little (library upgrades, another GPU, a quick
  ``--limit`` run). A metric fails only if the drop is larger than noise at the run's n explains; see
  :func:`check_run` for the exact rule. Improvements never fail.

The gate fails closed. Exit codes:

* 0: pass.
* 1: a number regressed, and only that: a metric dropped (stat), moved (exact), or is NaN/inf in the run (a run
  that produced no usable number where the baseline has one is the worst regression there is, not a format error).
* 2: cannot compare, or the input is unusable: different data, task/prompt version, shots or tokenizer; a task or
  metric missing from the run; a malformed or non-finite baseline (any field, in either mode: its shape is checked
  once, on load); a malformed results.json or samples file (a row of the wrong shape, a NaN/inf loglikelihood,
  fewer or more rows than ``n_samples``); an invalid option. Malformed inputs raise
  :class:`jbench.errors.JBenchError` (one message: what, where, what to do).
  2 wins over 1 because a comparison of different things has to be fixed before any verdict means anything;
  regressions found in the comparable tasks are still listed in the report.

Layout: :mod:`~jbench.baseline.store` (the file: build, validate, save, load; the run readers),
:mod:`~jbench.baseline.check` (``check_run`` and its steps), :mod:`~jbench.baseline.report` (the check's outcome
and its table), :mod:`~jbench.baseline.machine` (the CPU / kernel path a run was made on). The statistics are in
:mod:`jbench.stats` (Wilson bounds) and :mod:`jbench.metrics` (the bootstrap); the error classes in
:mod:`jbench.errors`. Every public name stays importable from ``jbench.baseline``.
"""

from __future__ import annotations

from jbench.baseline.check import (EXACT_RULE, LL_ATOL, MAX_EXAMPLE_DIFFS, PROPORTION_SCALE, STAT_RULE, check_run,
                                   describe_prompt_diff, validate_options, z_one_sided)
from jbench.baseline.machine import KERNEL_ENV, describe_machine, kernel_path_record
from jbench.baseline.report import CheckReport, Incompatibility, Mode, Row, Verdict
from jbench.baseline.store import (DEFAULT_BASELINES_DIR, FORMAT, NAME_RE, PROMPT_HASH_CHARS, Baseline,
                                   build_baseline, check_run_shape, load_baseline, prompt_hash, read_samples,
                                   save_baseline, validate_baseline)
from jbench.errors import BaselineError, CheckInputError
from jbench.metrics import GATE_BOOTSTRAP_ITERS as BOOTSTRAP_ITERS
from jbench.metrics import GATE_BOOTSTRAP_SEED as BOOTSTRAP_SEED
from jbench.metrics import gate_bootstrap_stderr as bootstrap_stderr
from jbench.stats import wilson_lowest_passing, wilson_upper

__all__ = ["BOOTSTRAP_ITERS", "BOOTSTRAP_SEED", "DEFAULT_BASELINES_DIR", "EXACT_RULE", "FORMAT", "KERNEL_ENV",
           "LL_ATOL", "MAX_EXAMPLE_DIFFS", "NAME_RE", "PROMPT_HASH_CHARS", "PROPORTION_SCALE", "STAT_RULE", "Baseline",
           "BaselineError", "CheckInputError", "CheckReport", "Incompatibility", "Mode", "Row", "Verdict",
           "bootstrap_stderr", "build_baseline", "check_run", "check_run_shape", "describe_machine",
           "describe_prompt_diff", "kernel_path_record", "load_baseline", "prompt_hash", "read_samples",
           "save_baseline", "validate_baseline", "validate_options", "wilson_lowest_passing", "wilson_upper",
           "z_one_sided"]
