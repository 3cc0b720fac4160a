"""A tiny inline-SVG line chart (no JavaScript, no CDN: the report must open offline)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = {"archive": "#1f77b4", "warehouse": "#2ca02c", "speed": "#ff7f0e"}


def line_chart(
    xs: Sequence[int],
    series: dict[str, Sequence[float]],
    marked: Sequence[int] = (),
    x_label: callable = str,  # type: ignore[valid-type]
    width: int = 900,
    height: int = 260,
    title: str = "",
) -> str:
    """Lines per series over ``xs``; x positions in ``marked`` get a red band (a mismatch)."""
    left, right, top, bottom = 60, 20, 44, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    if not xs:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40"><text x="10" y="25">no data</text></svg>'
    x0, x1 = min(xs), max(xs)
    span = max(1, x1 - x0)
    y_max = max([max(v) if len(v) else 0 for v in series.values()] + [1])

    def px(x: float) -> float:
        return left + (x - x0) / span * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_max * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">']
    parts.append(f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>')
    band = max(2.0, plot_w / max(1, len(xs)))
    marked_set = set(marked)
    for x in xs:
        if x in marked_set:
            x_lo = max(left, px(x) - band / 2)
            x_hi = min(left + plot_w, px(x) + band / 2)
            parts.append(f'<rect x="{x_lo:.1f}" y="{top}" width="{max(2.0, x_hi - x_lo):.1f}" height="{plot_h}" '
                         f'fill="#d62728" fill-opacity="0.18"><title>mismatch at {escape(x_label(x))}</title></rect>')
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = py(y_max * frac)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{y_max * frac:,.0f}</text>')
    ticks = sorted({xs[0], xs[len(xs) // 2], xs[-1]})
    for x in ticks:
        anchor = "start" if x == ticks[0] else ("end" if x == ticks[-1] else "middle")
        parts.append(f'<text x="{px(x):.1f}" y="{height - 12}" text-anchor="{anchor}">{escape(x_label(x))}</text>')
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE.get(name, "#555")
        dash = ' stroke-dasharray="6 3"' if i == 1 else (' stroke-dasharray="2 2"' if i == 2 else "")
        points = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in zip(xs, values, strict=True))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{points}">'
                     f'<title>{escape(name)}</title></polyline>')
        parts.append(f'<rect x="{left + i * 120}" y="{top - 14}" width="12" height="4" fill="{colour}"/>'
                     f'<text x="{left + 16 + i * 120}" y="{top - 8}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
