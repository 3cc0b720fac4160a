"""A tiny inline-SVG line chart (no JavaScript, no CDN: the report must open offline).

This module computes the geometry and the labels; ``templates/line_chart.svg.j2`` writes the markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup

from streaming.templating import render

PALETTE = {"archive": "#1f77b4", "warehouse": "#2ca02c", "speed": "#ff7f0e"}
_DASHES = ("", "6 3", "2 2")


def line_chart(
    xs: Sequence[int],
    series: dict[str, Sequence[float]],
    marked: Sequence[int] = (),
    x_label: Callable[[int], str] = str,
    width: int = 900,
    height: int = 260,
    title: str = "",
) -> Markup:
    """Lines per series over ``xs``; x positions in ``marked`` get a red band (a mismatch)."""
    left, right, top, bottom = 60, 20, 44, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    context: dict[str, Any] = {"width": width, "height": height, "title": title, "left": left, "top": top,
                               "right": left + plot_w, "plot_h": plot_h, "points": []}
    if not xs:
        return render("streaming.reconcile", "line_chart.svg.j2", **context)
    x0, x1 = min(xs), max(xs)
    span = max(1, x1 - x0)
    y_max = max([max(v) if len(v) else 0 for v in series.values()] + [1])

    def px(x: float) -> float:
        return left + (x - x0) / span * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_max * plot_h

    band = max(2.0, plot_w / max(1, len(xs)))
    marked_set = set(marked)
    bands = []
    for x in xs:
        if x in marked_set:
            x_lo = max(left, px(x) - band / 2)
            x_hi = min(left + plot_w, px(x) + band / 2)
            bands.append({"x": f"{x_lo:.1f}", "w": f"{max(2.0, x_hi - x_lo):.1f}", "label": x_label(x)})
    grid = [{"y": f"{py(y_max * f):.1f}", "label_y": f"{py(y_max * f) + 4:.1f}", "label": f"{y_max * f:,.0f}"}
            for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    tick_xs = sorted({xs[0], xs[len(xs) // 2], xs[-1]})
    ticks = [{"x": f"{px(x):.1f}", "label": x_label(x),
              "anchor": "start" if x == tick_xs[0] else ("end" if x == tick_xs[-1] else "middle")} for x in tick_xs]
    lines = [{"name": name, "colour": PALETTE.get(name, "#555"), "dash": _DASHES[i] if i < len(_DASHES) else "",
              "legend_x": left + i * 120,
              "points": " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in zip(xs, values, strict=True))}
             for i, (name, values) in enumerate(series.items())]
    context.update(bands=bands, grid_lines=grid, ticks=ticks, points=lines)
    return render("streaming.reconcile", "line_chart.svg.j2", **context)
