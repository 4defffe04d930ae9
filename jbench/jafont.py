"""A Japanese font for every chart and report page jbench makes.

Why: model names, task names and notes are often Japanese, and matplotlib's default DejaVu Sans has no kana or
kanji, so they render as empty boxes. The font comes from the ``matplotlib-fontja`` package (IPAexGothic, a
dependency of jbench), registered without importing that package, because its import switches matplotlib's
*global* default font. A system Noto Sans CJK / IPA font is the fallback. Latin text keeps DejaVu Sans: matplotlib
(>= 3.6) falls back glyph by glyph along the family list.

The HTML report embeds the same font, cut down to the Japanese characters the page uses (a few KB), so that a page
opened on a machine without Japanese fonts (a CI runner, a server's headless browser) shows no empty boxes either.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["embedded_font_css", "font_families", "japanese_font_name", "plot_fonts", "EMBEDDED_FAMILY"]

#: system fonts used when matplotlib-fontja is not installed, in order of preference
_SYSTEM_FALLBACKS = ("Noto Sans CJK JP", "Noto Sans JP", "IPAexGothic", "IPAGothic", "TakaoGothic")


def _fontja_file() -> Path | None:
    spec = importlib.util.find_spec("matplotlib_fontja")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "ipaexg.ttf"
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def japanese_font_name() -> str | None:
    """The family name of a font with Japanese glyphs, registered with matplotlib; None if there is none."""
    from matplotlib import font_manager

    path = _fontja_file()
    if path is not None:
        font_manager.fontManager.addfont(str(path))
        return font_manager.FontProperties(fname=str(path)).get_name()
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in _SYSTEM_FALLBACKS:
        if name in installed:
            return name
    log.warning("no Japanese font found (install matplotlib-fontja): Japanese text in charts will show as boxes")
    return None


def font_families() -> list[str]:
    """The sans-serif family list for charts: DejaVu Sans for Latin text, then the Japanese font."""
    ja = japanese_font_name()
    return ["DejaVu Sans"] + ([ja] if ja else [])


@contextmanager
def plot_fonts() -> Iterator[None]:
    """Draw (create *and* save) a figure inside this to get the Japanese-capable fonts, without changing
    matplotlib's global settings for the rest of the program."""
    import matplotlib

    # the families go in font.family itself: matplotlib falls back glyph by glyph only along that list (a generic
    # "sans-serif" resolves to its first installed member, and then Japanese is missing)
    with matplotlib.rc_context({"font.family": font_families()}):
        yield


#: the CSS family name of the embedded subset (listed after the reader's own Japanese fonts)
EMBEDDED_FAMILY = "jbench-ja"


def _needs_cjk_font(text: str) -> str:
    """The characters of ``text`` that a Latin font lacks (CJK punctuation, kana, kanji, full-width forms)."""
    return "".join(sorted({c for c in text if ord(c) >= 0x2E80}))


def embedded_font_css(text: str) -> str:
    """An ``@font-face`` rule that embeds the Japanese font, subset to the characters of ``text`` that need it;
    empty when there are none or no font file is available (the page then relies on the reader's fonts)."""
    import base64
    import io

    chars = _needs_cjk_font(text)
    path = _fontja_file()
    if not chars or path is None:
        return ""
    try:
        from fontTools import subset
        from fontTools.ttLib import TTFont

        opts = subset.Options()
        opts.name_IDs = ["*"]
        font = TTFont(str(path), lazy=True)
        sub = subset.Subsetter(opts)
        sub.populate(text=chars)
        sub.subset(font)
        buf = io.BytesIO()
        font.save(buf)
    except Exception as err:  # noqa: BLE001 - a page without the embedded font still works with the reader's
        log.warning("could not embed the Japanese font in the report: %s", err)
        return ""
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'@font-face{{font-family:"{EMBEDDED_FAMILY}";src:url(data:font/ttf;base64,{data}) format("truetype")}}'
