"""``python -m jbench``: the same command line as the ``jbench`` console script.

Import-safe on purpose: engines that start workers with ``spawn`` (vLLM) import the main module again in every child,
so nothing may run unless this is the main program."""

from jbench.cli import main

if __name__ == "__main__":
    main()
