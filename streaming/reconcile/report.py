"""Reports people read: Markdown (Dagster asset metadata, the CLI) and a self-contained HTML file.

The HTML has inline SVG charts (counts per layer per hour, mismatching hours marked) and the verdict
tables; it is written under ``$TALLY_HOME/reports/`` and, when given an S3 client, uploaded to the
archive bucket under ``reports/``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from streaming.reconcile.model import LOSS_VERDICTS, Result, Verdict
from streaming.reconcile.svg import line_chart

MAX_ROWS = 50


@dataclass(frozen=True)
class RunInfo:
    """What was reconciled: the window, when, and by whom."""

    start_minute: int
    end_minute: int
    generated_at: dt.datetime
    run_id: str
    who: str = "tally"


def minute_iso(minute: int) -> str:
    return dt.datetime.fromtimestamp(int(minute) * 60, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def hour_iso(hour: int) -> str:
    return dt.datetime.fromtimestamp(int(hour) * 3600, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:00Z")


def verdict_line(result: Result) -> str:
    """One sentence: the state of the window."""
    s = result.summary
    loss = {v: s.get(v, 0) for v in sorted(LOSS_VERDICTS) if s.get(v, 0)}
    head = "UNEXPLAINED LOSS" if loss else "all closed cells agree"
    detail = ", ".join(f"{v}={n:,}" for v, n in loss.items())
    return (f"{head}: {s.get('ok', 0):,} ok, {s.get('pending', 0):,} pending"
            + (f", {detail}" if detail else "") + f", {s.get('late_events', 0):,} late events counted")


def findings_table(result: Result, limit: int = MAX_ROWS) -> pd.DataFrame:
    """Non-ok cells in display form (ISO minutes), worst first."""
    order = {v.value: i for i, v in enumerate((Verdict.ARCHIVE_MISSING, Verdict.WAREHOUSE_MISSING,
                                              Verdict.WAREHOUSE_EXTRA, Verdict.SPEED_MISSING,
                                              Verdict.SPEED_EXTRA, Verdict.PENDING))}
    cells = result.findings().copy()
    if cells.empty:
        return pd.DataFrame(columns=["verdict", "tenant_id", "event_type", "minute", "archive", "warehouse_raw",
                                     "warehouse", "speed", "expected", "findings"])
    cells["rank"] = cells["verdict"].map(order)
    cells = cells.sort_values(["rank", "tenant_id", "event_type", "minute"]).head(limit)
    return pd.DataFrame({
        "verdict": cells["verdict"], "tenant_id": cells["tenant_id"], "event_type": cells["event_type"],
        "minute": cells["minute"].map(minute_iso), "archive": cells["archive"],
        "warehouse_raw": cells["warehouse_rows"], "warehouse": cells["warehouse_mart"], "speed": cells["speed"],
        "expected": cells["expected"],
        "findings": cells["findings"],
    })


def sequence_table(result: Result) -> pd.DataFrame:
    seq = result.sequences
    if seq.empty:
        return pd.DataFrame(columns=["verdict", "source_id", "source_seq", "missing", "received", "explained_by"])
    return pd.DataFrame({
        "verdict": seq["verdict"], "source_id": seq["source_id"],
        "source_seq": [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(seq["first_missing"], seq["last_missing"])],
        "missing": seq["missing"],
        "received": [minute_iso(a) if a == b else f"{minute_iso(a)} .. {minute_iso(b)}"
                     for a, b in zip(seq["min_minute"], seq["max_minute"])],
        "explained_by": seq["explained_by"].fillna(""),
    })


def rollup_table(result: Result) -> pd.DataFrame:
    rows = result.rollups
    if rows.empty:
        return pd.DataFrame(columns=["verdict", "layer", "grain", "tenant_id", "event_type", "bucket", "served",
                                     "minutes_sum"])
    label = [hour_iso(b) if g == "hour" else hour_iso(b * 24)[:10] for g, b in zip(rows["grain"], rows["bucket"])]
    return pd.DataFrame({"verdict": rows["verdict"], "layer": rows["layer"], "grain": rows["grain"],
                         "tenant_id": rows["tenant_id"], "event_type": rows["event_type"], "bucket": label,
                         "served": rows["served"], "minutes_sum": rows["minutes_sum"]})


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(result: Result, info: RunInfo, report_path: str | None = None) -> str:
    s = result.summary
    counts = pd.DataFrame([(v.value, s.get(v.value, 0)) for v in Verdict], columns=["verdict", "count"])
    ids = result.event_ids.head(MAX_ROWS).copy()
    if not ids.empty:
        ids["minute"] = ids["minute"].map(minute_iso)
    parts = [
        f"## Reconciliation {minute_iso(info.start_minute)} .. {minute_iso(info.end_minute)}\n",
        f"**{verdict_line(result)}**\n",
        f"run `{info.run_id}` by {info.who} at {info.generated_at:%Y-%m-%dT%H:%M:%SZ}; windows closed before "
        + (minute_iso(int(result.closed_before // 60)) if result.closed_before != float("-inf") else "— (a layer is empty)")
        + "\n",
        "### Verdicts\n", _md_table(counts),
        f"### Findings (first {MAX_ROWS})\n", _md_table(findings_table(result)),
        "### Source sequence findings\n", _md_table(sequence_table(result)),
        "### Served hour/day counters that disagree with their minutes\n", _md_table(rollup_table(result).head(MAX_ROWS)),
        f"### Event ids missing or extra in the warehouse (first {MAX_ROWS} of {len(result.event_ids)})\n",
        _md_table(ids[["table", "kind", "event_id", "tenant_id", "event_type", "minute"]] if not ids.empty else ids),
        f"### Late events (counted, not loss): {s.get('late_events', 0):,}\n",
    ]
    if report_path:
        parts.append(f"HTML report: `{report_path}`\n")
    return "\n".join(parts)


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    counts = list(frame.columns) == ["verdict", "count"]
    for row in frame.itertuples(index=False):
        verdict = str(row[0])
        cls = "bad" if verdict in LOSS_VERDICTS else ("pending" if verdict == "pending" else "")
        if counts and not row[1]:
            cls = ""
        rows.append(f'<tr class="{cls}">' + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _chart(result: Result) -> str:
    hours = result.hours
    if hours.empty:
        return line_chart([], {}, title="events per hour")
    per = hours.groupby("hour")[["archive", "warehouse_mart", "speed"]].sum().sort_index()
    bad = hours[hours["verdict"].isin(LOSS_VERDICTS)]["hour"].unique().tolist()
    xs = [int(h) for h in per.index]
    return line_chart(xs, {"archive": per["archive"].tolist(), "warehouse": per["warehouse_mart"].tolist(),
                           "speed": per["speed"].tolist()}, marked=bad, x_label=hour_iso,
                      title="events per hour by layer (archive as delivered; warehouse, speed de-duplicated)")


def _minute_chart(result: Result) -> str:
    cells = result.cells
    if cells.empty:
        return ""
    per = cells.groupby("minute")[["archive", "warehouse_mart", "speed"]].sum().sort_index()
    bad = cells[cells["verdict"].isin(LOSS_VERDICTS)]["minute"].unique().tolist()
    return line_chart([int(m) for m in per.index], {"archive": per["archive"].tolist(),
                      "warehouse": per["warehouse_mart"].tolist(), "speed": per["speed"].tolist()},
                      marked=bad, x_label=minute_iso, title="drilled minutes (hours that differ or are open)")


def to_html(result: Result, info: RunInfo) -> str:
    s = result.summary
    badge = "bad" if result.unexplained_loss else "good"
    ids = result.event_ids.head(MAX_ROWS).copy()
    if not ids.empty:
        ids["minute"] = ids["minute"].map(minute_iso)
        ids = ids[["kind", "table", "event_id", "tenant_id", "event_type", "minute"]]
    late = result.late.head(MAX_ROWS).copy()
    if not late.empty:
        late["minute"] = late["minute"].map(minute_iso)
        late.insert(0, "status", "late")
    counts = pd.DataFrame([(v.value, s.get(v.value, 0)) for v in Verdict], columns=["verdict", "count"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>tally reconciliation {escape(minute_iso(info.start_minute))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
tr.bad td {{ background: #fde2e2; }} tr.pending td {{ background: #fff4d6; }}
.badge {{ padding: 6px 12px; border-radius: 4px; display: inline-block; font-weight: bold; }}
.badge.good {{ background: #dff3df; }} .badge.bad {{ background: #fde2e2; }}
</style></head><body>
<h1>Reconciliation {escape(minute_iso(info.start_minute))} .. {escape(minute_iso(info.end_minute))}</h1>
<p class="badge {badge}">{escape(verdict_line(result))}</p>
<p>run <code>{escape(info.run_id)}</code> by {escape(info.who)} at {info.generated_at:%Y-%m-%dT%H:%M:%SZ}</p>
{_chart(result)}
{_minute_chart(result)}
<h2>Verdicts</h2>{_html_table(counts)}
<h2>Findings</h2>{_html_table(findings_table(result))}
<h2>Source sequence findings</h2>{_html_table(sequence_table(result))}
<h2>Served hour/day counters that disagree with their minutes</h2>{_html_table(rollup_table(result).head(MAX_ROWS))}
<h2>Event ids missing or extra in the warehouse ({len(result.event_ids)})</h2>{_html_table(ids)}
<h2>Late events (counted, not loss)</h2>{_html_table(late)}
</body></html>
"""


def summary_json(result: Result, info: RunInfo) -> dict[str, Any]:
    return {"run_id": info.run_id, "from": minute_iso(info.start_minute), "to": minute_iso(info.end_minute),
            "generated_at": info.generated_at.isoformat(), "summary": result.summary,
            "unexplained_loss": result.unexplained_loss}


def write_report(result: Result, info: RunInfo, reports_dir: Path, s3: Any | None = None,
                 bucket: str | None = None) -> Path:
    """Write ``<run_id>.html`` (+ ``.md`` and ``.json``) under ``reports_dir`` and upload them to S3."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    html_path = reports_dir / f"{info.run_id}.html"
    html_path.write_text(to_html(result, info))
    md = to_markdown(result, info, str(html_path))
    (reports_dir / f"{info.run_id}.md").write_text(md)
    (reports_dir / f"{info.run_id}.json").write_text(json.dumps(summary_json(result, info), indent=1))
    if s3 is not None and bucket:
        for suffix, ctype in ((".html", "text/html"), (".md", "text/markdown"), (".json", "application/json")):
            path = reports_dir / f"{info.run_id}{suffix}"
            s3.put_object(Bucket=bucket, Key=f"reports/{path.name}", Body=path.read_bytes(), ContentType=ctype)
    return html_path
