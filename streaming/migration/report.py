"""The parallel-run report in three forms: JSON (the whole finding), Markdown (Dagster asset metadata) and
HTML (Jinja2, charts as inline SVG: it opens offline)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from streaming.migration.compare import Cutover, DayVerdict, tenant_days
from streaming.templating import render

UTC = dt.timezone.utc
#: Event ids listed per cell in the report (the JSON keeps them all).
LISTED_IDS = 5


def day_label(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()


def hour_label(hour: int) -> str:
    return dt.datetime.fromtimestamp(int(hour) * 3600, tz=UTC).strftime("%Y-%m-%d %H:00")


@dataclass
class MigrationReport:
    cells: pd.DataFrame
    days: list[DayVerdict]
    cutover: Cutover
    tolerance: float
    legacy_has_ids: bool
    generated_at: dt.datetime

    @property
    def findings(self) -> pd.DataFrame:
        return self.cells[self.cells["verdict"] != "ok"] if len(self.cells) else self.cells

    def day_cells(self, day: int) -> pd.DataFrame:
        return self.cells[self.cells["day"] == day] if len(self.cells) else self.cells


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records")) if len(frame) else []


def report_json(report: MigrationReport) -> dict[str, Any]:
    per_tenant = tenant_days(report.cells)
    findings = report.findings.copy()
    if len(findings):
        findings["hour_utc"] = [hour_label(h) for h in findings["hour"]]
    return {
        "generated_at": report.generated_at.isoformat(),
        "tolerance": report.tolerance,
        "legacy_has_ids": report.legacy_has_ids,
        "cutover": asdict(report.cutover),
        "days": [{"day": day_label(v.day), "good": v.good, "reason": v.reason,
                  "tally": int(report.day_cells(v.day)["tally"].sum()) if len(report.cells) else 0,
                  "legacy": int(report.day_cells(v.day)["legacy"].sum()) if len(report.cells) else 0,
                  "tenants": _records(per_tenant[per_tenant["day"] == v.day].drop(columns=["day"]))}
                 for v in report.days],
        "findings": _records(findings.drop(columns=["day"])),
    }


def markdown(report: MigrationReport) -> str:
    """What the Dagster UI shows (MetadataValue.md)."""
    c = report.cutover
    lines = [f"**Cutover: {'ready' if c.ready else 'not ready'}**: {c.reason}", "",
             "| day | tally | legacy | deviation | good | why |", "|---|---:|---:|---:|---|---|"]
    for v in report.days:
        cells = report.day_cells(v.day)
        t, lg = int(cells["tally"].sum()) if len(cells) else 0, int(cells["legacy"].sum()) if len(cells) else 0
        lines.append(f"| {day_label(v.day)} | {t:,} | {lg:,} | {lg - t:+,} | {'yes' if v.good else 'no'} | {v.reason} |")
    per_tenant = tenant_days(report.cells)
    if len(per_tenant):
        lines += ["", "| day | tenant | tally | legacy | deviation | legacy_missing | legacy_extra | tally_loss |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in per_tenant.itertuples():
            lines.append(f"| {day_label(r.day)} | {r.tenant_id} | {r.tally:,} | {r.legacy:,} | "
                         f"{r.deviation:+,} ({r.deviation_rel:+.2%}) | {r.legacy_missing} | {r.legacy_extra} | {r.tally_loss} |")
    findings = report.findings
    if len(findings):
        lines += ["", "| hour (UTC) | tenant | event type | tally | legacy | verdict | why |",
                  "|---|---|---|---:|---:|---|---|"]
        for r in findings.head(200).itertuples():
            lines.append(f"| {hour_label(r.hour)} | {r.tenant_id} | {r.event_type} | {r.tally:,} | {r.legacy:,} | "
                         f"{r.verdict} | {r.why} |")
    return "\n".join(lines)


COLOURS = {"tally": "#2ca02c", "legacy": "#9467bd"}


def bar_chart(hours: list[int], tally: list[int], legacy: list[int], deviating: set[int], title: str,
              width: int = 900, height: int = 240) -> str:
    """Per hour, tally's bar beside the legacy's (inline SVG); a deviating hour's label is red."""
    left, top, bottom = 60, 34, 36
    plot_w, plot_h = width - left - 20, height - top - bottom
    peak = max([*tally, *legacy, 1])
    slot = plot_w / max(1, len(hours))
    bar = max(1.0, min(18.0, slot * 0.4))
    grid_lines = [{"y": f"{top + plot_h - frac * plot_h:.1f}", "label_y": f"{top + plot_h - frac * plot_h + 4:.1f}",
                   "label": f"{peak * frac:,.0f}"} for frac in (0.0, 0.5, 1.0)]
    bars, labels = [], []
    for i, hour in enumerate(hours):
        x = left + i * slot + slot / 2
        for offset, value, name in ((-bar, tally[i], "tally"), (0.0, legacy[i], "legacy")):
            h = value / peak * plot_h
            bars.append({"x": f"{x + offset:.1f}", "y": f"{top + plot_h - h:.1f}", "w": f"{bar:.1f}", "h": f"{h:.1f}",
                         "name": name, "title": f"{hour_label(hour)} {name}: {value:,}"})
        labels.append({"x": f"{x:.1f}", "colour": "#b00020" if hour in deviating else "#222",
                       "text": hour_label(hour)[11:13]})
    return render("streaming.migration", "bar_chart.svg.j2", width=width, height=height, title=title, left=left,
                  right=left + plot_w, colours=COLOURS, grid_lines=grid_lines, bars=bars, labels=labels)


def _charts(report: MigrationReport) -> list[str]:
    charts = []
    for v in report.days:
        cells = report.day_cells(v.day)
        if not len(cells):
            continue
        by_hour = cells.groupby("hour")[["tally", "legacy"]].sum().sort_index()
        deviating = {int(h) for h in cells[cells["verdict"] != "ok"]["hour"]}
        charts.append(bar_chart([int(h) for h in by_hour.index], [int(n) for n in by_hour["tally"]],
                                [int(n) for n in by_hour["legacy"]], deviating,
                                f"{day_label(v.day)}: events per hour (UTC), tally vs legacy (red hour: a deviation)"))
    return charts


def html(report: MigrationReport) -> str:
    doc = report_json(report)
    for finding in doc["findings"]:
        for key in ("missing_ids", "duplicate_ids", "unknown_ids"):
            finding[key + "_shown"] = finding[key][:LISTED_IDS]
    return str(render("streaming.migration", "report.html.j2", doc=doc, charts=_charts(report)))


def write_report(report: MigrationReport, directory: Path) -> dict[str, Path]:
    """``migration-<first day>-<last day>.{json,md,html}`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    days = report.days
    stem = f"migration-{day_label(days[0].day)}-{day_label(days[-1].day)}" if days else "migration"
    paths = {"json": directory / f"{stem}.json", "md": directory / f"{stem}.md", "html": directory / f"{stem}.html"}
    paths["json"].write_text(json.dumps(report_json(report), indent=1))
    paths["md"].write_text(markdown(report))
    paths["html"].write_text(html(report))
    return paths
