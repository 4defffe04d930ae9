"""Scoring backends. Each backend is one module implementing :class:`jbench.models.base.Scorer`."""
