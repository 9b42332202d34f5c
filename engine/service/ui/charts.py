"""Charts as SVG text, drawn on the server: a TIV waterfall and a histogram of changes.

Geometry is computed in Decimal and written with one decimal place, so even the pixels
of a chart come from the exact figures (nothing passes through a binary float). The
SVG scales to its container (viewBox), carries a <title> and <desc> for screen readers,
and every bar its own <title> with the exact figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from html import escape

WIDTH, HEIGHT = 720, 300
TOP, BOTTOM, LEFT, RIGHT = 28, 44, 16, 16
_PX = Decimal("0.1")


def _px(value: Decimal) -> str:
    return str(value.quantize(_PX, rounding=ROUND_HALF_UP))


def grouped(value: Decimal) -> str:
    """1234567.5 -> 1,234,567.5: the figure exactly, with thousands separators."""
    return format(value, ",")


def waterfall(title: str, steps: Sequence[tuple[str, Decimal]], total: tuple[str, Decimal]) -> str:
    """Bars that climb from 0 by each step, then the total from 0."""
    running = Decimal(0)
    spans: list[tuple[str, Decimal, Decimal, Decimal, str]] = []  # label, low, high, value, kind
    for label, amount in steps:
        start, running = running, running + amount
        spans.append((label, min(start, running), max(start, running), amount, "step"))
    name, amount = total
    spans.append((name, min(Decimal(0), amount), max(Decimal(0), amount), amount, "total"))
    low = min(Decimal(0), *(s[1] for s in spans))
    high = max(Decimal(0), *(s[2] for s in spans))
    scale = (high - low) or Decimal(1)
    plot_h = Decimal(HEIGHT - TOP - BOTTOM)
    slot = Decimal(WIDTH - LEFT - RIGHT) / len(spans)
    bar = slot * Decimal("0.6")

    def y(v: Decimal) -> Decimal:
        return Decimal(TOP) + (high - v) / scale * plot_h

    parts = [_open(title, f"{title}: " + "; ".join(f"{s[0]} {grouped(s[3])}" for s in spans))]
    parts.append(_axis(y(Decimal(0))))
    for index, (label, lo, hi, amount, kind) in enumerate(spans):
        x = Decimal(LEFT) + slot * index + (slot - bar) / 2
        # Both edges rounded first, so a step starts exactly where the last one ended.
        top = y(hi).quantize(_PX, rounding=ROUND_HALF_UP)
        height = y(lo).quantize(_PX, rounding=ROUND_HALF_UP) - top
        css = "total" if kind == "total" else ("down" if amount < 0 else "up")
        parts.append(
            f'<g class="bar {css}"><title>{escape(label)}: {grouped(amount)}</title>'
            f'<rect x="{_px(x)}" y="{_px(top)}" width="{_px(bar)}" height="{_px(height)}"/>'
            f'<text class="value" x="{_px(x + bar / 2)}" y="{_px(top - 6)}">'
            f"{grouped(amount)}</text>"
            f'<text class="label" x="{_px(x + bar / 2)}" y="{HEIGHT - BOTTOM + 18}">'
            f"{escape(label)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, values: Sequence[Decimal], bins: int = 10) -> str:
    """How many values fall in each of `bins` equal ranges from the least to the most."""
    if not values:
        return ""
    least, most = min(values), max(values)
    width = (most - least) / bins if most != least else Decimal(1)
    counts = [0] * (bins if most != least else 1)
    for value in values:
        index = int((value - least) / width) if most != least else 0
        counts[min(index, len(counts) - 1)] += 1
    tallest = max(counts)
    plot_h = Decimal(HEIGHT - TOP - BOTTOM)
    slot = Decimal(WIDTH - LEFT - RIGHT) / len(counts)
    summary = f"{len(values)} changes from {grouped(least)} to {grouped(most)}"
    parts = [_open(title, f"{title}: {summary}"), _axis(Decimal(HEIGHT - BOTTOM))]
    for index, count in enumerate(counts):
        lo = least + width * index
        hi = lo + width if most != least else most
        height = plot_h * count / tallest
        x = Decimal(LEFT) + slot * index + 1
        top = Decimal(HEIGHT - BOTTOM) - height
        parts.append(
            f'<g class="bar up"><title>{grouped(lo)} to {grouped(hi)}: {count}</title>'
            f'<rect x="{_px(x)}" y="{_px(top)}" width="{_px(slot - 2)}" '
            f'height="{_px(max(height, Decimal(0)))}"/>'
            + (
                f'<text class="value" x="{_px(x + slot / 2)}" y="{_px(top - 6)}">{count}</text>'
                if count
                else ""
            )
            + "</g>"
        )
    parts.append(
        f'<text class="label" x="{LEFT}" y="{HEIGHT - BOTTOM + 18}" text-anchor="start">'
        f"{grouped(least)}</text>"
        f'<text class="label" x="{WIDTH - RIGHT}" y="{HEIGHT - BOTTOM + 18}" '
        f'text-anchor="end">{grouped(most)}</text></svg>'
    )
    return "".join(parts)


def _open(title: str, description: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(title)}</title><desc>{escape(description)}</desc>"
    )


def _axis(y: Decimal) -> str:
    return f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_px(y)}" y2="{_px(y)}"/>'
