"""Charts drawn on the server as inline SVG: no JavaScript, readable on a phone.

Pure functions: figures in, safe SVG markup out. Every label and tooltip is escaped.
Geometry is computed with Decimal like everything else in billing (a coordinate is not
money, but one numeric type keeps floats out of the app), rounded to a tenth of a unit.

The SVGs scale to their container (viewBox, no fixed size); roster.css sizes them. Each
chart has an accessible name, and every bar and point carries a <title> tooltip with its
exact figure; the page's tables give the same numbers to screen readers.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# Geometry only: a plain context, so a ratio like 1/3 rounds instead of trapping.
_GEOMETRY = decimal.Context(prec=12, rounding=decimal.ROUND_HALF_EVEN)
_TENTH = Decimal("0.1")

LABEL_CHARS = 20  # longer bar labels are cut, the full text stays in the tooltip


@dataclass(frozen=True)
class Bar:
    """One bar: its label, value (>= 0), the text shown beside it and its tooltip."""

    label: str
    value: Decimal
    value_text: str
    tooltip: str


@dataclass(frozen=True)
class TrendPoint:
    """One point of a trend: a short axis label ("3 Jun"), the value and its tooltip."""

    label: str
    value: Decimal
    tooltip: str


def bar_chart(*, bars: Sequence[Bar], title: str) -> SafeString:
    """A horizontal bar chart, one row per bar, longest bar = largest value.

    Returns SVG markup safe to put in a template; an empty `bars` gives a chart that
    says there is nothing to show.
    """
    width, label_w, value_w, row_h, bar_h = 480, 150, 100, 26, 16
    plot_w = width - label_w - value_w
    height = max(len(bars), 1) * row_h + 8
    if not bars:
        return _svg(title, width, height, _empty(width, height), kind="bars")
    top = max(bar.value for bar in bars)
    rows = []
    for n, bar in enumerate(bars):
        y = 4 + n * row_h
        length = _scale(bar.value, top, plot_w)
        label = bar.label if len(bar.label) <= LABEL_CHARS else bar.label[: LABEL_CHARS - 1] + "…"
        rows.append(
            format_html(
                '<g class="chart-bar"><title>{}</title>'
                '<text x="{}" y="{}" text-anchor="end" class="chart-label">{}</text>'
                '<rect x="{}" y="{}" width="{}" height="{}" rx="2"></rect>'
                '<text x="{}" y="{}" class="chart-value">{}</text></g>',
                bar.tooltip,
                label_w - 8,
                y + bar_h - 3,
                label,
                label_w,
                y,
                length,
                bar_h,
                _add(label_w, length, 6),
                y + bar_h - 3,
                bar.value_text,
            )
        )
    return _svg(title, width, height, SafeString("".join(rows)), kind="bars")


def trend_chart(*, points: Sequence[TrendPoint], title: str, top_label: str = "") -> SafeString:
    """A line over the points, left to right, with the area under it shaded.

    `top_label` names the value at the top of the vertical axis (the largest value);
    the horizontal axis shows the first, middle and last labels. Returns SVG markup.
    """
    width, height = 800, 220
    left, right, top_pad, bottom = 8, 8, 26, 28
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    base = top_pad + plot_h
    if not points:
        return _svg(title, width, height, _empty(width, height), kind="trend")
    top = max(point.value for point in points)
    step = _GEOMETRY.divide(Decimal(plot_w), Decimal(max(len(points) - 1, 1)))
    xs = [
        _round(_GEOMETRY.add(left, _GEOMETRY.multiply(step, n)))
        if len(points) > 1
        else Decimal(left + plot_w // 2)
        for n in range(len(points))
    ]
    ys = [_round(Decimal(base) - _scale(point.value, top, plot_h)) for point in points]
    line = " ".join(f"{x},{y}" for x, y in zip(xs, ys, strict=True))
    area = f"{xs[0]},{base} {line} {xs[-1]},{base}"
    ticks = sorted({0, len(points) // 2, len(points) - 1})
    parts = [
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="chart-grid"></line>'
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="chart-axis"></line>'
            '<text x="{}" y="{}" class="chart-label">{}</text>'
            '<polygon points="{}" class="chart-area"></polygon>'
            '<polyline points="{}" class="chart-line"></polyline>',
            left,
            top_pad,
            width - right,
            top_pad,
            left,
            base,
            width - right,
            base,
            left,
            top_pad - 8,
            top_label,
            area,
            line,
        ),
        format_html_join(
            "",
            '<circle cx="{}" cy="{}" r="3" class="chart-point"><title>{}</title></circle>',
            ((x, y, point.tooltip) for x, y, point in zip(xs, ys, points, strict=True)),
        ),
        format_html_join(
            "",
            '<text x="{}" y="{}" text-anchor="{}" class="chart-label">{}</text>',
            ((xs[n], height - 6, _anchor(n, len(points)), points[n].label) for n in ticks),
        ),
    ]
    return _svg(title, width, height, SafeString("".join(parts)), kind="trend")


def _svg(title: str, width: int, height: int, body: SafeString, *, kind: str) -> SafeString:
    return format_html(
        '<svg class="chart chart-{}" viewBox="0 0 {} {}" role="img" aria-label="{}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{}</title>{}</svg>',
        kind,
        width,
        height,
        title,
        title,
        body,
    )


def _empty(width: int, height: int) -> SafeString:
    return format_html(
        '<text x="{}" y="{}" text-anchor="middle" class="chart-label">No spend to show</text>',
        width // 2,
        height // 2,
    )


def _scale(value: Decimal, top: Decimal, length: int) -> Decimal:
    """value / top of `length` units, rounded to a tenth (0 when top is 0)."""
    if top <= 0 or value <= 0:
        return Decimal(0)
    return _round(_GEOMETRY.multiply(_GEOMETRY.divide(value, top), Decimal(length)))


def _round(value: Decimal) -> Decimal:
    return value.quantize(_TENTH, context=_GEOMETRY)


def _add(*values: int | Decimal) -> Decimal:
    return _round(sum((Decimal(v) for v in values), Decimal(0)))


def _anchor(n: int, count: int) -> str:
    # Keep the first and last labels inside the picture.
    if n == 0 and count > 1:
        return "start"
    if n == count - 1 and count > 1:
        return "end"
    return "middle"
