"""Time-series plots as inline SVG, for the self-contained run report (no JS, no network, no CDN).

One plot: lines over a time range, an optional second y axis on the right (errors against load),
and vertical markers (injected faults). A plot without a single finite value still renders its
frame and markers, with an explicit "no data in range".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
WIDTH, HEIGHT = 920, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 64, 14, 30
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass
class Line:
    label: str
    points: Sequence[tuple[float, float]]  # (unix time, value); NaN breaks the line
    right: bool = False  # against the right-hand axis


@dataclass
class Marker:
    at: float
    label: str


@dataclass
class Axis:
    unit: str  # shown as the axis title
    scale: float = 1.0  # values are divided by this before plotting (bytes -> MiB)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.2g}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def _finite(points: Sequence[tuple[float, float]], t0: float, t1: float) -> list[tuple[float, float]]:
    return [(t, v) for t, v in points if t0 <= t <= t1 and math.isfinite(v)]


def _range(lines: list[Line], t0: float, t1: float, scale: float) -> tuple[float, float]:
    values = [v / scale for ln in lines for _, v in _finite(ln.points, t0, t1)]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    lo = min(lo, 0.0)  # rates, counts, latencies and memory all read best from zero
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    return lo, hi * 1.05


def time_plot(
    lines: Sequence[Line],
    t0: float,
    t1: float,
    left: Axis,
    right: Axis | None = None,
    markers: Sequence[Marker] = (),
) -> tuple[str, bool]:
    """(the <svg> element, whether any line has data in [t0, t1])."""
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * pw

    out = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img">',
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#bbb"/>',
    ]
    has_data = False
    axes = [(left, [ln for ln in lines if not ln.right], False)]
    if right is not None and any(ln.right for ln in lines):
        axes.append((right, [ln for ln in lines if ln.right], True))
    colors = {id(ln): PALETTE[i % len(PALETTE)] for i, ln in enumerate(lines)}
    for axis, group, on_right in axes:
        lo, hi = _range(group, t0, t1, axis.scale)
        ticks = [v for v in nice_ticks(lo, hi) if lo <= v <= hi]

        def y(v: float, lo: float = lo, hi: float = hi) -> float:
            return TOP + ph - (v - lo) / (hi - lo) * ph

        ax = WIDTH - RIGHT + 6 if on_right else LEFT - 6
        anchor = "start" if on_right else "end"
        for v in ticks:
            if not on_right:
                out.append(
                    f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                )
            out.append(
                f'<text x="{ax}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="{anchor}">{fmt(v)}</text>'
            )
        tx = WIDTH - 12 if on_right else 14
        out.append(
            f'<text x="{tx}" y="{TOP + ph / 2:.0f}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 {tx} {TOP + ph / 2:.0f})">{escape(axis.unit)}</text>'
        )
        for ln in group:
            segments: list[list[str]] = [[]]
            for t, v in ln.points:
                if not (t0 <= t <= t1) or not math.isfinite(v):
                    if segments[-1]:
                        segments.append([])
                    continue
                segments[-1].append(f"{x(t):.1f},{y(v / axis.scale):.1f}")
            d = " ".join("M" + " L".join(s) for s in segments if s)
            if not d:
                continue
            has_data = True
            dash = ' stroke-dasharray="6 3"' if on_right else ""
            out.append(
                f'<path class="series" data-label="{escape(ln.label)}" d="{d}" fill="none" '
                f'stroke="{colors[id(ln)]}" stroke-width="1.6"{dash}><title>{escape(ln.label)}</title></path>'
            )
    step = next((s for s in _TIME_STEPS if span / s <= 8), _TIME_STEPS[-1])
    t = math.ceil(t0 / step) * step
    while t <= t1:
        out.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - 10}" font-size="11" text-anchor="middle">{_clock(t)}</text>'
        )
        out.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP + ph}" y2="{TOP + ph + 4}" stroke="#888"/>'
        )
        t += step
    for m in markers:
        if not (t0 <= m.at <= t1):
            continue
        mx = x(m.at)
        out.append(
            f'<g class="fault-marker" data-at="{m.at:.3f}"><line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" '
            f'y2="{TOP + ph}" stroke="#c00" stroke-width="1.5" stroke-dasharray="4 3"/>'
            f'<text x="{mx + 3:.1f}" y="{TOP + 11}" font-size="11" fill="#c00">{escape(m.label)}</text>'
            f"<title>{escape(m.label)} at {_clock(m.at)} UTC</title></g>"
        )
    return _close(out, has_data, LEFT + pw / 2, TOP + ph / 2, "no data in range")


def legend(lines: Sequence[Line]) -> str:
    items = []
    for i, ln in enumerate(lines):
        style = "dashed" if ln.right else "solid"
        color = PALETTE[i % len(PALETTE)]
        side = " (right axis)" if ln.right else ""
        items.append(
            f'<li><span class="swatch" style="border-top:3px {style} {color}"></span>'
            f"{escape(ln.label)}{side}</li>"
        )
    return f'<ul class="legend">{"".join(items)}</ul>' if items else ""


def bar_plot(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    axis: Axis,
) -> tuple[str, bool]:
    """Grouped bars: one group per category, one bar per series (None: no value, drawn as "n/a").
    A standalone <svg> with its legend inside: (the element, whether any bar has a value).
    Each bar carries data-category, data-series and data-value, so a test can read it back."""
    n_cat, n_ser = max(len(categories), 1), max(len(series), 1)
    legend_h = 16 * ((n_ser + 3) // 4)
    top = TOP + legend_h
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - top - BOTTOM - 16  # two label lines below
    values = [v / axis.scale for _, vs in series for v in vs if v is not None and math.isfinite(v)]
    lo, hi = _range([Line("", [(0.0, v) for v in values])], 0.0, 0.0, 1.0)
    out = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img">',
        f'<rect x="{LEFT}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#bbb"/>',
    ]

    def y(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    for v in (t for t in nice_ticks(lo, hi) if lo <= t <= hi):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{fmt(v)}</text>'
        )
    out.append(
        f'<text x="14" y="{top + ph / 2:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2:.0f})">{escape(axis.unit)}</text>'
    )
    for i, (label, _) in enumerate(series):
        lx, ly = LEFT + (i % 4) * (pw / 4), TOP + 16 * (i // 4)
        out.append(
            f'<rect x="{lx:.1f}" y="{ly:.1f}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{lx + 14:.1f}" y="{ly + 9:.1f}" font-size="11">{escape(label)}</text>'
        )
    group = pw / n_cat
    bar = group * 0.8 / n_ser
    has_data = False
    for c, cat in enumerate(categories):
        gx = LEFT + c * group + group * 0.1
        name = cat.replace("\n", " / ")
        for s, (label, vs) in enumerate(series):
            v = vs[c] if c < len(vs) else None
            bx = gx + s * bar
            if v is None or not math.isfinite(v):
                out.append(f'<text x="{bx + bar / 2:.1f}" y="{top + ph - 4}" font-size="10" fill="#888" '
                           f'text-anchor="middle">n/a</text>')
                continue
            has_data = True
            h = max(y(lo) - y(v / axis.scale), 0.0)
            out.append(
                f'<rect class="bar" data-category="{escape(name)}" data-series="{escape(label)}" '
                f'data-value="{v:.6g}" x="{bx:.1f}" y="{y(lo) - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}"><title>{escape(name)}: '
                f"{escape(label)} {fmt(v / axis.scale)}</title></rect>"
            )
        for k, part in enumerate(cat.split("\n")[:2]):  # a category may carry two label lines
            out.append(f'<text x="{gx + group * 0.4:.1f}" y="{top + ph + 14 + 13 * k}" font-size="11" '
                       f'text-anchor="middle">{escape(part)}</text>')
    return _close(out, has_data, LEFT + pw / 2, top + ph / 2, "no data")


def _close(out: list[str], has_data: bool, x: float, y: float, empty: str) -> tuple[str, bool]:
    """End the SVG; a plot without data says so in its middle."""
    if not has_data:
        out.append(f'<text class="no-data" x="{x:.0f}" y="{y:.0f}" font-size="16" fill="#888"'
                   f' text-anchor="middle">{empty}</text>')
    out.append("</svg>")
    return "\n".join(out), has_data
