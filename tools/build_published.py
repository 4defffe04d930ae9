#!/usr/bin/env python3
"""Rebuild jbench/published/published.json from the raw published results.

Usage: python tools/build_published.py [PATH_TO_shared/published] [--check]

PATH defaults to $JBENCH_PUBLISHED_DIR, else ../shared/published beside the checkout. --check writes nothing and
exits 1 when the shipped file is out of date (what tests/test_published.py asserts).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jbench.errors import JBenchError  # noqa: E402
from jbench.published.build import build_registry, dumps  # noqa: E402
from jbench.published.registry import REGISTRY_FILE  # noqa: E402


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    default = os.environ.get("JBENCH_PUBLISHED_DIR") or ROOT.parent / "shared" / "published"
    src = Path(args[0]) if args else Path(default)
    try:
        text = dumps(build_registry(src))
    except JBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if check:
        same = REGISTRY_FILE.is_file() and REGISTRY_FILE.read_text(encoding="utf-8") == text
        print(f"{REGISTRY_FILE}: {'in sync' if same else 'OUT OF DATE: rerun tools/build_published.py'}")
        return 0 if same else 1
    REGISTRY_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {REGISTRY_FILE} ({len(text)} bytes) from {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
