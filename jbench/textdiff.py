"""Where two texts first differ: shared by ``compare`` (documents asked differently) and ``check`` (a prompt that
changed since the baseline), which each used to carry their own copy."""

from __future__ import annotations

__all__ = ["first_diff"]


def first_diff(a: str, b: str) -> int:
    """0-based offset of the first differing character; the shorter length when one text is a prefix of the other
    (and the common length when they are equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))
