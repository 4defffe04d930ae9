"""Published numbers (reference result files and model cards) with provenance, and the reproduction verdict.

:mod:`~jbench.published.registry` (the data and look-ups), :mod:`~jbench.published.build` (rebuilds the data file
from the raw sources), :mod:`~jbench.published.render` (tables and averages, as jbench prints its own),
:mod:`~jbench.published.verdict` (published vs measured: Δ, noise, verdict per task).
"""
