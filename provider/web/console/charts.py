"""Server-rendered bar charts: the geometry of an SVG the templates draw (no script, no library)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 200
PLOT_WIDTH = 360
VALUE_WIDTH = 110


@dataclass(frozen=True)
class Bar:
    """One labelled bar: the total's width and the failed part's width, in pixels."""

    label: str
    total: int
    failures: int
    y: int
    width: float
    failed_width: float


@dataclass(frozen=True)
class BarChart:
    """A horizontal bar chart: total width and height in pixels and its bars."""

    width: int
    height: int
    label_width: int
    bars: tuple[Bar, ...]


def bar_chart(rows: Sequence[tuple[str, int, int]]) -> BarChart:
    """A chart of ``(label, total, failures)`` rows, bars scaled to the largest total."""
    largest = max((total for _, total, _ in rows), default=0) or 1
    bars = tuple(
        Bar(
            label=label,
            total=total,
            failures=failures,
            y=index * (BAR_HEIGHT + GAP),
            width=round(PLOT_WIDTH * total / largest, 1),
            failed_width=round(PLOT_WIDTH * failures / largest, 1),
        )
        for index, (label, total, failures) in enumerate(rows)
    )
    height = max(1, len(bars)) * (BAR_HEIGHT + GAP)
    return BarChart(LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH, height, LABEL_WIDTH, bars)
