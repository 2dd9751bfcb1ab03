"""The Today page's figures as inline SVG bar charts, written by the server as text.

Why not matplotlib: the figures are counts per hour, a few dozen rectangles; matplotlib would
add a dependency of about 40 MB to the Pi's install, seconds of import and tens of MB of memory
to the web process, and a PNG per refresh. An SVG of rectangles costs nothing to make, is
sharp at any size and is drawn by the browser.
"""

from __future__ import annotations

from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
WIDTH, HEIGHT = 640, 220
LEFT, BOTTOM, TOP, RIGHT = 40, 28, 12, 110


def colour_of(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _nice_max(value: float) -> float:
    """The smallest round top of the axis (four whole gridline steps) at or above ``value``."""
    for top in (4, 8, 12, 20, 40, 60, 100, 200, 400, 600, 1000, 2000, 4000, 6000, 10000):
        if value <= top:
            return float(top)
    return float(-(-value // 4000) * 4000)


def _frame(title: str, y_max: float, y_label: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}"><title>{escape(title)}</title>',
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>']
    for k in range(5):
        value = y_max * k / 4
        y = TOP + plot_h * (1 - k / 4)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        text = f"{value:.0f}{y_label}" if y_label else f"{value:g}"
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{text}</text>')
    return parts


def stacked_bars(title: str, hours: list[str], series: dict[str, list[int]]) -> str:
    """Bars per hour (``hours``: labels such as "14"), each stacked by series (bin -> counts)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(hours))]
    y_max = _nice_max(max(totals, default=0) or 1)
    parts = _frame(title, y_max, "")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(hours))
    colours = colour_of(list(series))
    for i, hour in enumerate(hours):
        bar_w = min(slot * 0.7, 40.0)
        x, base = LEFT + i * slot + (slot - bar_w) / 2, 0.0
        for name, values in series.items():
            if values[i]:
                h = plot_h * values[i] / y_max
                y = TOP + plot_h - base - h
                parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                             f'fill="{colours[name]}"><title>{escape(hour)}h {escape(name)}: {values[i]}</title></rect>')
                base += h
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="11" '
                     f'text-anchor="middle">{escape(hour)}</text>')
    for k, name in enumerate(series):
        y = TOP + 14 * k
        parts.append(f'<rect x="{WIDTH - RIGHT + 10}" y="{y}" width="10" height="10" fill="{colours[name]}"/>'
                     f'<text x="{WIDTH - RIGHT + 24}" y="{y + 9}" font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def rate_bars(title: str, hours: list[str], rates: list[float | None]) -> str:
    """One bar per hour of a share (0..1) drawn in percent; None: no items that hour."""
    top = max((r for r in rates if r is not None), default=0.0)
    y_max = _nice_max(max(top * 100, 1.0))
    parts = _frame(title, y_max, "%")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(hours))
    for i, (hour, rate) in enumerate(zip(hours, rates)):
        bar_w = min(slot * 0.7, 40.0)
        x = LEFT + i * slot + (slot - bar_w) / 2
        if rate:
            h = plot_h * rate * 100 / y_max
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" fill="{PALETTE[3]}"><title>{escape(hour)}h: {rate * 100:.1f}%</title></rect>')
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="11" '
                     f'text-anchor="middle">{escape(hour)}</text>')
    parts.append("</svg>")
    return "".join(parts)
