"""The package version, in a module of its own so that modules needing it never import the package root (and
with it the public API): that would close an import cycle."""

__version__ = "0.1.0"
