"""A plan as a dict (``--format json``), as terminal tables, and as an HTML page (Jinja2, inline SVG)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from streaming.plan.capacity import GIB, Plan
from streaming.templating import render

#: One colour per component, in the plans' component order (the chart's stacking order).
COLOURS = ("#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f", "#bcbd22")
S3_MONTHS_SHOWN = (1, 3, 6, 12, 24, 36)


def as_dict(plan: Plan) -> dict[str, Any]:
    return {
        "load": asdict(plan.load),
        "total_monthly": round(plan.total, 2),
        "budget_monthly": plan.budget,
        "within_budget": plan.total <= plan.budget,
        "components": [
            {"name": c.name, "monthly": round(c.monthly, 2), "sizing": c.sizing,
             "lines": [{"item": x.item, "monthly": round(x.monthly, 2), "basis": x.basis} for x in c.lines],
             "notes": c.notes, "beyond": c.beyond}
            for c in plan.components
        ],
        "redis_memory": {
            "used_bytes": round(plan.redis.used_bytes), "ratio": plan.redis.ratio,
            "families": [{"family": f.family, "keys": round(f.keys), "elements": round(f.elements),
                          "bytes": round(f.bytes * plan.redis.ratio), "basis": f.basis} for f in plan.redis.families],
        },
        "s3_by_month": [{k: round(v, 2) for k, v in row.items()} for row in plan.s3_by_month],
        "latency": plan.latency,
        "figures": {"path": plan.figures_path, "used": plan.figures_used},
        "prices": {"as_of": plan.prices_as_of, "note": plan.prices_note},
    }


def _money(x: float) -> str:
    return f"${x:,.0f}" if x >= 10 else f"${x:,.2f}"


def _s3_rows(plan: Plan) -> list[dict[str, float]]:
    shown = [r for r in plan.s3_by_month if r["month"] in S3_MONTHS_SHOWN or r["month"] == len(plan.s3_by_month)]
    return shown


def print_text(plan: Plan, console: Console) -> None:
    load = plan.load
    console.print(Text("tally plan", style="bold"), Text(f"{load.name}: {load.events_per_day:,.0f} events/day, peak x{load.peak_multiplier:g}, "
                  f"{load.tenants:,} tenants, dedup horizon {load.dedup_horizon_s / 3600:g} h, archive {load.archive_retention_days} d, "
                  f"warehouse every {load.refresh_minutes} min"))
    summary = Table("component", "what to deploy", "$/month", title="monthly cost")
    for c in plan.components:
        summary.add_row(c.name, "; ".join(x.item for x in c.lines), _money(c.monthly))
    verdict = Text("within") if plan.total <= plan.budget else Text("over", style="bold red")
    summary.add_row(Text("total", style="bold"), verdict + Text(f" the {_money(plan.budget)}/month ceiling"),
                    Text(_money(plan.total), style="bold"))
    console.print(summary)
    details = Table("component", "line", "$/month", "from", title="where each figure comes from", show_lines=True)
    for c in plan.components:
        for x in c.lines:
            details.add_row(c.name, x.item, _money(x.monthly), x.basis)
    console.print(details)
    for c in plan.components:
        for text in c.beyond:
            console.print(Text("beyond one tier", style="bold yellow") + Text(f" ({c.name}): {text}"))
        for text in c.notes:
            console.print(Text(f"{c.name}:", style="dim") + Text(f" {text}"))
    memory = Table("key family", "keys", "elements", "GiB", "from", title=f"Redis memory: {plan.redis.used_bytes / GIB:,.2f} GiB")
    for f in sorted(plan.redis.families, key=lambda f: -f.bytes):
        memory.add_row(f.family, f"{f.keys:,.0f}", f"{f.elements:,.0f}", f"{f.bytes * plan.redis.ratio / GIB:,.3f}", f.basis)
    console.print(memory)
    s3 = Table("month", "Standard GB", "Standard-IA GB", "Glacier IR GB", "storage $/month", title="S3 archive by month")
    for row in _s3_rows(plan):
        s3.add_row(str(int(row["month"])), f"{row['standard_gb']:,.0f}", f"{row['standard_ia_gb']:,.0f}",
                   f"{row['glacier_ir_gb']:,.0f}", _money(row["storage"]))
    console.print(s3)
    lat = plan.latency
    console.print(f"event-to-counter latency: Lambda ~{lat['lambda_typical_s']:.1f} s typical, {lat['lambda_peak_worst_s']:.1f} s "
                  f"worst at the peak; `tally consume` workers p50 {lat['workers_p50_s']:g} s / p99 {lat['workers_p99_s']:g} s. "
                  f"{lat['basis']}", highlight=False)
    console.print(Text(f"measured figures: {plan.figures_path}; prices as of {plan.prices_as_of}. {plan.prices_note}",
                       style="dim"))


def _chart(plans: list[Plan], budget: float) -> dict[str, Any]:
    """Geometry of the stacked bars (one per plan, a segment per component) for the template."""
    width, height, left, top, bottom = 760, 340, 80, 30, 60
    plot_h = height - top - bottom
    top_value = max([p.total for p in plans] + [budget]) * 1.08
    bar_w = min(120, (width - left - 40) / max(1, len(plans)) * 0.6)
    step = (width - left - 40) / max(1, len(plans))

    def y(v: float) -> float:
        return top + plot_h - v / top_value * plot_h

    bars = []
    for i, p in enumerate(plans):
        x = left + step * i + (step - bar_w) / 2
        base = 0.0
        segments = []
        for j, c in enumerate(p.components):
            if c.monthly <= 0:
                continue
            segments.append({"x": x, "y": y(base + c.monthly), "h": max(0.5, y(base) - y(base + c.monthly)),
                             "colour": COLOURS[j % len(COLOURS)], "title": f"{c.name}: {_money(c.monthly)}/month"})
            base += c.monthly
        bars.append({"x": x, "w": bar_w, "label": p.load.name, "total": _money(p.total), "top": y(p.total), "segments": segments})
    ticks = [{"y": y(top_value * f), "label": _money(top_value * f)} for f in (0, 0.25, 0.5, 0.75, 1.0)]
    names = [c.name for c in plans[0].components] if plans else []
    legend = [{"name": n, "colour": COLOURS[j % len(COLOURS)]} for j, n in enumerate(names)]
    return {"width": width, "height": height, "left": left, "bars": bars, "ticks": ticks, "legend": legend,
            "budget_y": y(budget), "budget": _money(budget), "bottom": top + plot_h}


def _plan_bar(plan: Plan, width: float = 900) -> dict[str, Any]:
    """One plan's own stacked bar: its components left to right, the whole bar its total."""
    scale = plan.total or 1.0
    x, segments = 0.0, []
    for j, c in enumerate(plan.components):
        w = c.monthly / scale * width
        if w > 0:
            segments.append({"x": x, "w": max(0.5, w), "colour": COLOURS[j % len(COLOURS)],
                             "title": f"{c.name}: {_money(c.monthly)}/month ({c.monthly / plan.total:.0%})"})
        x += w
    return {"width": width, "segments": segments, "of_budget": plan.total / plan.budget}


def render_html(plans: list[Plan]) -> str:
    budget = plans[0].budget if plans else 50_000.0
    filters = {"money": _money, "gib": lambda b: f"{b / GIB:,.2f}"}
    return str(render("streaming.plan", "plan.html.j2", filters, plans=plans, chart=_chart(plans, budget),
                      budget=budget, s3_rows=_s3_rows, colours=COLOURS, plan_bar=_plan_bar))
