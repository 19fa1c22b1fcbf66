"""Colours and line styles shared by the controls and the figures."""

from __future__ import annotations

from ibwidget._vocabulary import LINE_STYLES, PALETTE, SVG_DASHES

#: Run r of a RunView uses LINE_STYLES[r] and MARKERS[r] (cycled).
MARKERS = ("circle", "square", "triangle-up", "diamond", "cross", "triangle-down")
TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#ff7f0e"
EPOCH_SCHEME = "viridis"


def layer_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def run_style(r: int) -> tuple[str, str]:
    """(line_style, marker) of run r."""
    return LINE_STYLES[r % len(LINE_STYLES)], MARKERS[r % len(MARKERS)]


def legend_html(names: list[str]) -> str:
    """An HTML legend: one line sample per run in its line style."""
    items = []
    for r, name in enumerate(names):
        dash = SVG_DASHES[run_style(r)[0]]
        sample = (
            '<svg width="34" height="10" style="vertical-align:middle">'
            f'<line x1="1" y1="5" x2="33" y2="5" stroke="#333" stroke-width="2" stroke-dasharray="{dash}"/></svg>'
        )
        items.append(f'<span style="margin-right:1.2em">{sample} {_escape(name)} ({run_style(r)[1]})</span>')
    return "".join(items)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
