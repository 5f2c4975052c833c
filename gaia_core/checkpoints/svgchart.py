"""Plain SVG charts for the report page: bars and lines over days, drawn here, no library.

Every text that reaches the SVG (labels, series names, tooltips) is escaped: series names
are tier names and may come from shared records. Each mark carries its value in
``data-value`` (what the browser test reads back from the rendered page) and a
``<title>`` (the browser's tooltip).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 36
TICKS = 4


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _x_labels(labels: Sequence[str], x_of: Callable[[int], float]) -> list[str]:
    step = max(1, len(labels) // 8)
    return [f'<text class="x-label" x="{x_of(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f'{e(label[5:] if len(label) == 10 else label)}</text>'
            for i, label in enumerate(labels) if i % step == 0 or i == len(labels) - 1]


def _frame(y_max: float, y_format: Callable[[float], str]) -> list[str]:
    out = []
    for k in range(TICKS + 1):
        value = y_max * k / TICKS
        y = HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * k / TICKS
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="y-label" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{e(y_format(value))}</text>')
    return out


def _scale(y_max: float) -> Callable[[float], float]:
    span = HEIGHT - TOP - BOTTOM
    return lambda v: HEIGHT - BOTTOM - span * (v / y_max if y_max else 0)


def _svg(label: str, body: list[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{e(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>")


def bar_chart(label: str, labels: Sequence[str], values: Sequence[float], *, y_format: Callable[[float], str],
              tooltip: Callable[[str, float], str]) -> str:
    """One bar per label."""
    y_max = max([*values, 0]) or 1
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    y = _scale(y_max)
    body = _frame(y_max, y_format)
    for i, (name, value) in enumerate(zip(labels, values)):
        top = y(value)
        body.append(f'<rect class="bar" x="{LEFT + i * slot + slot * 0.15:.1f}" y="{top:.1f}" '
                    f'width="{slot * 0.7:.1f}" height="{HEIGHT - BOTTOM - top:.1f}" data-value="{value:g}">'
                    f'<title>{e(tooltip(name, value))}</title></rect>')
    body += _x_labels(labels, lambda i: LEFT + (i + 0.5) * slot)
    return _svg(label, body)


def line_chart(label: str, labels: Sequence[str], series: dict[str, Sequence[float | None]], *,
               y_format: Callable[[float], str], tooltip: Callable[[str, str, float], str],
               y_max: float | None = None) -> str:
    """One line per series (gaps where a value is None), a dot per value, and a legend."""
    values = [v for points in series.values() for v in points if v is not None]
    top = y_max if y_max is not None else (max([*values, 0]) or 1)
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    y = _scale(top)
    body = _frame(top, y_format)
    for n, (name, points) in enumerate(series.items()):
        segment: list[str] = []
        for i, value in enumerate([*points, None]):
            if value is None:
                if len(segment) > 1:
                    body.append(f'<polyline class="line s{n % 6}" points="{" ".join(segment)}"/>')
                segment = []
                continue
            x = LEFT + (i + 0.5) * slot
            segment.append(f"{x:.1f},{y(value):.1f}")
        for i, value in enumerate(points):
            if value is not None:
                body.append(f'<circle class="dot s{n % 6}" cx="{LEFT + (i + 0.5) * slot:.1f}" cy="{y(value):.1f}" '
                            f'r="3" data-value="{value:g}"><title>{e(tooltip(name, labels[i], value))}</title></circle>')
        body.append(f'<g class="legend"><rect class="key s{n % 6}" x="{LEFT + n * 150}" y="4" '
                    f'width="10" height="10"/><text x="{LEFT + 14 + n * 150}" y="13">{e(name[:20])}</text></g>')
    body += _x_labels(labels, lambda i: LEFT + (i + 0.5) * slot)
    return _svg(label, body)


__all__ = ["bar_chart", "e", "line_chart"]
