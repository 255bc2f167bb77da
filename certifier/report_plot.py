"""Accuracy against radius as an inline SVG, for the HTML report: no plotting library, no fonts
or scripts to fetch, and every point a browser (or a test) can read back from the markup."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Sequence

from .stats import show_number

#: Curve colours, told apart by most colour-blind readers (Okabe and Ito's palette, then greys).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
WIDTH, HEIGHT = 720, 330
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 52
LEGEND_LINE = 20


@dataclass
class Curve:
    """One line of the plot: ``points`` (radius, share) in data units, drawn in order; ``marks``
    (radius, share, tooltip) are the table's radii, drawn as dots."""

    name: str
    series: str
    points: list[tuple[float, float]]
    marks: list[tuple[float, float, str]] = field(default_factory=list)
    dashed: bool = False


def step_points(radii: Sequence[float], count: int) -> list[tuple[float, float]]:
    """The share of ``count`` inputs whose radius is at least r, as a staircase: ``radii`` are those
    of the inputs that count (right and certified); the value at a radius is the one before its drop,
    as the summary counts ``radius >= r``. The last point is the lowest radius with nothing left."""
    if not count:
        return []
    level, points = len(radii), []
    if not radii or min(radii) > 0:
        points.append((0.0, level / count))
    for radius in sorted(set(radii)):
        points.append((radius, level / count))
        level -= sum(1 for r in radii if r == radius)
        points.append((radius, level / count))
    return points


def nice_ticks(top: float, most: int = 8) -> list[float]:
    """Round tick values from 0 to ``top`` (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(top) and top > 0):
        return [0.0]
    raw = top / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def _tick_text(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-12)) if step < 1 else 0
    if step * 10 ** decimals % 1:  # 2.5, 0.25: one digit more
        decimals += 1
    return f"{value:.{decimals}f}" if abs(value) < 1e6 else show_number(value, 2)


def svg_plot(curves: Sequence[Curve], *, x_label: str, y_label: str, title: str, right: float) -> str:
    """An SVG of ``curves`` on [0, right] x [0, 1], with axes, grid, labels and a legend.

    Each curve is a ``g.curve`` with ``data-run`` and ``data-series``; its ``polyline`` has the
    points in data units as ``data-points`` ("r,share r,share"); each mark is a ``circle`` with
    ``data-radius`` and ``data-value`` and a tooltip.
    """
    e = _escape
    right = right if math.isfinite(right) and right > 0 else 1.0
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    height = HEIGHT + LEGEND_LINE * len(curves) + 8

    def x(value: float) -> float:
        return LEFT + plot_width * min(max(value, 0.0), right) / right

    def y(value: float) -> float:
        return TOP + plot_height * (1 - min(max(value, 0.0), 1.0))

    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
             f'width="{WIDTH}" height="{height}" role="img" aria-label="{e(title)}">',
             f"<title>{e(title)}</title>",
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="#fff" stroke="#888"/>']
    for share in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_width}" y1="{y(share):.1f}" y2="{y(share):.1f}" '
                     f'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(share) + 4:.1f}" text-anchor="end" class="tick">'
                     f"{100 * share:.0f}%</text>")
    ticks = nice_ticks(right)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for tick in ticks:
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{TOP}" y2="{TOP + plot_height}" stroke="#eee"/>')
        parts.append(f'<text x="{x(tick):.1f}" y="{TOP + plot_height + 16}" text-anchor="middle" class="tick">'
                     f"{e(_tick_text(tick, step))}</text>")
    parts.append(f'<text x="{LEFT + plot_width / 2:.1f}" y="{TOP + plot_height + 38}" text-anchor="middle" '
                 f'class="axis-label">{e(x_label)}</text>')
    middle = TOP + plot_height / 2
    parts.append(f'<text x="16" y="{middle:.1f}" text-anchor="middle" transform="rotate(-90 16 {middle:.1f})" '
                 f'class="axis-label">{e(y_label)}</text>')
    for number, curve in enumerate(curves):
        colour = PALETTE[number % len(PALETTE)]
        dash = ' stroke-dasharray="6 4"' if curve.dashed else ""
        data = " ".join(f"{r!r},{v!r}" for r, v in curve.points)
        drawn = " ".join(f"{x(r):.2f},{y(v):.2f}" for r, v in curve.points)
        parts.append(f'<g class="curve" data-run="{e(curve.name)}" data-series="{e(curve.series)}">')
        parts.append(f'<polyline points="{drawn}" data-points="{data}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"{dash}/>')
        for radius, value, tooltip in curve.marks:
            parts.append(f'<circle cx="{x(radius):.2f}" cy="{y(value):.2f}" r="3.5" fill="{colour}" '
                         f'data-radius="{radius!r}" data-value="{value!r}"><title>{e(tooltip)}</title></circle>')
        parts.append("</g>")
        line_y = HEIGHT + LEGEND_LINE * number + 4
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + 28}" y1="{line_y}" y2="{line_y}" stroke="{colour}" '
                     f'stroke-width="2"{dash}/>')
        parts.append(f'<text x="{LEFT + 36}" y="{line_y + 4}" class="legend">{e(curve.name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _escape(text: str) -> str:
    return html.escape(str(text), quote=True)
