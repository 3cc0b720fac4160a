"""Reports people read: Markdown (Dagster asset metadata, the CLI) and a self-contained HTML file.

The HTML has inline SVG charts (counts per layer per hour, mismatching hours marked) and the verdict
tables; it is written under ``$TALLY_HOME/reports/`` and, when given an S3 client, uploaded to the
archive bucket under ``reports/``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from streaming.literal import printable

from streaming.reconcile.model import LOSS_VERDICTS, PRECEDENCE, Result, Verdict
from streaming.reconcile.svg import line_chart
from streaming.templating import render

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


#: What each kind of finding means to whoever reads the verdict: data lost, data counted twice, or a
#: served roll-up that disagrees with its own minutes. A verdict the engine adds later and that is not
#: named here counts as loss (the conservative reading).
DUPLICATE_VERDICTS: frozenset[str] = frozenset(v.value for v in (
    Verdict.WAREHOUSE_EXTRA, Verdict.SPEED_EXTRA, Verdict.UPSTREAM_DUPLICATE))
MISMATCH_VERDICTS: frozenset[str] = frozenset(v.value for v in (
    Verdict.SPEED_ROLLUP_MISMATCH, Verdict.WAREHOUSE_ROLLUP_MISMATCH))
LOSS_ONLY_VERDICTS: frozenset[str] = LOSS_VERDICTS - DUPLICATE_VERDICTS - MISMATCH_VERDICTS

#: The sections of a report's findings: the Result's frame behind each (all of its rows and columns).
SECTIONS: tuple[str, ...] = ("cells", "sequences", "rollups", "event_ids", "late")


def finding_frames(result: Result) -> dict[str, pd.DataFrame]:
    """Every finding, as the engine made it: cells that are not ok (pending included), every sequence
    finding (explained and pending included), every roll-up finding, every listed event id, late events."""
    return {"cells": result.findings(), "sequences": result.sequences, "rollups": result.rollups,
            "event_ids": result.event_ids, "late": result.late}


def _frame_verdicts(frame: pd.DataFrame) -> pd.Series:
    return frame["verdict"] if "verdict" in frame.columns and len(frame) else pd.Series([], dtype=object)


def verdict_counts(result: Result) -> list[dict[str, Any]]:
    """What was found, each number with what it counts: cells (tenant × event type × minute) for the
    cell verdicts, sequence numbers for the sequence findings, hour/day buckets for roll-ups, events
    for late arrivals. Computed from the Result's frames (the summary mixes these units)."""
    rows: list[dict[str, Any]] = []
    cells = _frame_verdicts(result.cells).value_counts()
    known = [Verdict.OK.value] + [v.value for v in PRECEDENCE if v is not Verdict.OK]
    cell_verdicts = known + sorted(set(cells.index) - set(known))
    for verdict in cell_verdicts:
        n = int(result.summary.get("ok", 0)) if verdict == Verdict.OK.value else int(cells.get(verdict, 0))
        rows.append({"verdict": verdict, "count": n, "of": "cells", "detail": ""})
    seq = result.sequences
    gaps = seq[seq["verdict"] == Verdict.UPSTREAM_GAP.value] if len(seq) else seq
    rows.append({"verdict": Verdict.UPSTREAM_GAP.value, "count": int(gaps["missing"].sum()) if len(gaps) else 0,
                 "of": "sequence numbers", "detail": f"in {len(gaps):,} gaps" if len(gaps) else ""})
    dups = seq[seq["verdict"] == Verdict.UPSTREAM_DUPLICATE.value] if len(seq) else seq
    rows.append({"verdict": Verdict.UPSTREAM_DUPLICATE.value, "count": len(dups),
                 "of": "sequence numbers carried by more than one event",
                 "detail": f"{int(dups['missing'].sum()):,} extra events" if len(dups) else ""})
    for verdict, label in (("pending", "sequence numbers in gaps not closed yet (judged later)"),
                           ("explained", "sequence numbers in gaps a deletion or a lost archive object explains")):
        part = seq[seq["verdict"] == verdict] if len(seq) else seq
        if len(part):
            rows.append({"verdict": f"gap {verdict}", "count": int(part["missing"].sum()), "of": label,
                         "detail": f"in {len(part):,} gaps"})
    others = sorted(set(_frame_verdicts(seq)) - {Verdict.UPSTREAM_GAP.value, Verdict.UPSTREAM_DUPLICATE.value,
                                                  "pending", "explained"})
    for verdict in others:
        part = seq[seq["verdict"] == verdict]
        rows.append({"verdict": verdict, "count": int(part["missing"].sum()), "of": "sequence numbers", "detail": ""})
    rollups = _frame_verdicts(result.rollups).value_counts()
    for verdict in sorted(MISMATCH_VERDICTS | set(rollups.index)):
        rows.append({"verdict": verdict, "count": int(rollups.get(verdict, 0)), "of": "hour/day buckets", "detail": ""})
    if len(result.event_ids):
        for (kind, table), n in result.event_ids.groupby(["kind", "table"]).size().items():
            rows.append({"verdict": f"event ids {kind} in {table}", "count": int(n), "of": "events",
                         "detail": "listed in the findings"})
    rows.append({"verdict": "late events", "count": int(result.summary.get("late_events", 0)),
                 "of": "events (arrived after their window closed: counted, not loss)", "detail": ""})
    return rows


def outcome(result: Result) -> str:
    """``loss`` (something was lost), ``duplicates`` (counted more than once, nothing lost),
    ``mismatch`` (only served roll-ups disagree with their minutes) or ``ok``."""
    found = {r["verdict"] for r in verdict_counts(result) if r["count"] and r["verdict"] in LOSS_VERDICTS}
    found |= {str(v) for v in _frame_verdicts(result.cells).unique() if str(v) in LOSS_VERDICTS}
    if found & LOSS_ONLY_VERDICTS or (found - DUPLICATE_VERDICTS - MISMATCH_VERDICTS):
        return "loss"
    if found & DUPLICATE_VERDICTS:
        return "duplicates"
    if found & MISMATCH_VERDICTS:
        return "mismatch"
    return "ok"


HEADLINES = {"loss": "UNEXPLAINED LOSS", "duplicates": "UNEXPLAINED DUPLICATES (nothing lost)",
             "mismatch": "ROLL-UP MISMATCH (minutes agree; served hour/day counters do not)",
             "ok": "all closed cells agree"}


def verdict_line(result: Result) -> str:
    """One sentence: the state of the window, each number with its unit."""
    counts = verdict_counts(result)
    by = {r["verdict"]: r for r in counts}
    found = [r for r in counts if r["count"] and r["verdict"] in LOSS_VERDICTS]
    detail = ", ".join(f"{r['verdict']}={r['count']:,} {_short_unit(r['of'])}" for r in found)
    return (f"{HEADLINES[outcome(result)]}: {by['ok']['count']:,} ok, {by['pending']['count']:,} pending cells"
            + (f", {detail}" if detail else "") + f", {int(result.summary.get('late_events', 0)):,} late events counted")


def _short_unit(unit: str) -> str:
    return {"sequence numbers carried by more than one event": "sequence numbers sent twice"}.get(unit, unit)


_ORDER = [v.value for v in (Verdict.ARCHIVE_MISSING, Verdict.WAREHOUSE_MISSING, Verdict.WAREHOUSE_EXTRA,
                            Verdict.SPEED_MISSING, Verdict.SPEED_EXTRA, Verdict.PENDING)]


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """A findings frame for people: ``verdict`` first, then every column in the engine's order; epoch
    minutes, hours, days and roll-up buckets as UTC times. Columns it does not know pass through."""
    out = frame.copy()
    for column in out.columns:
        if column in ("minute", "min_minute", "max_minute") or column.endswith("_minute"):
            out[column] = out[column].map(lambda m: minute_iso(m) if pd.notna(m) else "")
        elif column == "hour":
            out[column] = out[column].map(hour_iso)
        elif column == "day":
            out[column] = out[column].map(lambda d: hour_iso(int(d) * 24)[:10])
    if "bucket" in out.columns and "grain" in out.columns:
        out["bucket"] = [hour_iso(b) if g == "hour" else hour_iso(int(b) * 24)[:10]
                         for g, b in zip(out["grain"], out["bucket"], strict=True)]
    first = [c for c in ("verdict", "kind") if c in out.columns][:1]
    return out[first + [c for c in out.columns if c not in first]]


def findings_table(result: Result, limit: int = MAX_ROWS) -> pd.DataFrame:
    """Non-ok cells in display form (every column the engine gives), worst first."""
    cells = result.findings()
    if cells.empty:
        return display(cells)
    rank = cells["verdict"].map({v: i for i, v in enumerate(_ORDER)}).fillna(len(_ORDER))
    cells = cells.assign(_rank=rank).sort_values(["_rank", "tenant_id", "event_type", "minute"]).drop(columns="_rank")
    return display(cells.head(limit)).reset_index(drop=True)


def sequence_table(result: Result) -> pd.DataFrame:
    return display(result.sequences)


def rollup_table(result: Result) -> pd.DataFrame:
    return display(result.rollups)


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(printable(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(result: Result, info: RunInfo, report_path: str | None = None) -> str:
    s = result.summary
    counts = pd.DataFrame(verdict_counts(result), columns=["verdict", "count", "of", "detail"])
    ids = display(result.event_ids.head(MAX_ROWS))
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
        _md_table(ids),
        f"### Late events (counted, not loss): {s.get('late_events', 0):,}\n",
    ]
    if report_path:
        parts.append(f"HTML report: `{report_path}`\n")
    return "\n".join(parts)


def _html_table(frame: pd.DataFrame) -> dict[str, Any]:
    """A frame as the report template's ``table`` macro takes it: columns, and rows with their class
    (a loss verdict is marked bad, a pending one pending; a zero count in the verdicts table is not)."""
    rows = []
    counts = list(frame.columns)[:2] == ["verdict", "count"]
    for row in frame.itertuples(index=False):
        verdict = str(row[0])
        cls = "bad" if verdict in LOSS_VERDICTS else ("pending" if verdict == "pending" else "")
        if counts and not row[1]:
            cls = ""
        rows.append({"cls": cls, "cells": [str(v) for v in row]})
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


def _chart(result: Result) -> Markup:
    hours = result.hours
    if hours.empty:
        return line_chart([], {}, title="events per hour")
    per = hours.groupby("hour")[["archive", "warehouse_mart", "speed"]].sum().sort_index()
    bad = hours[hours["verdict"].isin(LOSS_VERDICTS)]["hour"].unique().tolist()
    xs = [int(h) for h in per.index]
    return line_chart(xs, {"archive": per["archive"].tolist(), "warehouse": per["warehouse_mart"].tolist(),
                           "speed": per["speed"].tolist()}, marked=bad, x_label=hour_iso,
                      title="events per hour by layer (archive as delivered; warehouse, speed de-duplicated)")


def _minute_chart(result: Result) -> Markup | str:
    cells = result.cells
    if cells.empty:
        return ""
    per = cells.groupby("minute")[["archive", "warehouse_mart", "speed"]].sum().sort_index()
    bad = cells[cells["verdict"].isin(LOSS_VERDICTS)]["minute"].unique().tolist()
    return line_chart([int(m) for m in per.index], {"archive": per["archive"].tolist(),
                      "warehouse": per["warehouse_mart"].tolist(), "speed": per["speed"].tolist()},
                      marked=bad, x_label=minute_iso, title="drilled minutes (hours that differ or are open)")


def to_html(result: Result, info: RunInfo) -> str:
    """The report page (``templates/report.html.j2``), every value escaped by Jinja."""
    badge = "bad" if outcome(result) != "ok" else "good"
    ids = display(result.event_ids.head(MAX_ROWS))
    late = display(result.late.head(MAX_ROWS))
    if not late.empty:
        late.insert(0, "status", "late")
    counts = pd.DataFrame(verdict_counts(result), columns=["verdict", "count", "of", "detail"])
    sections = [
        ("Verdicts", counts), ("Findings", findings_table(result)), ("Source sequence findings", sequence_table(result)),
        ("Served hour/day counters that disagree with their minutes", rollup_table(result).head(MAX_ROWS)),
        (f"Event ids missing or extra in the warehouse ({len(result.event_ids)})", ids),
        ("Late events (counted, not loss)", late),
    ]
    return render("streaming.reconcile", "report.html.j2", start=minute_iso(info.start_minute), end=minute_iso(info.end_minute),
                  badge=badge, headline=verdict_line(result), run_id=info.run_id, who=info.who,
                  generated_at=f"{info.generated_at:%Y-%m-%dT%H:%M:%SZ}", hour_chart=_chart(result),
                  minute_chart=_minute_chart(result),
                  sections=[(heading, _html_table(frame)) for heading, frame in sections])


def summary_json(result: Result, info: RunInfo) -> dict[str, Any]:
    """The run in brief (Dagster metadata): the window, the outcome, the counts with their units."""
    return {"run_id": info.run_id, "from": minute_iso(info.start_minute), "to": minute_iso(info.end_minute),
            "generated_at": info.generated_at.isoformat(), "outcome": outcome(result),
            "headline": verdict_line(result), "counts": verdict_counts(result), "summary": result.summary,
            "unexplained_loss": result.unexplained_loss}


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as JSON-ready dicts, every column kept (lists as lists, missing values as None)."""
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if value is pd.NaT or value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def report_json(result: Result, info: RunInfo) -> dict[str, Any]:
    """The whole report: :func:`summary_json` plus every finding (:func:`finding_frames`), each row with
    every column the engine gave it, raw (epoch minutes, as in the Result)."""
    return {**summary_json(result, info),
            "closed_before": None if result.closed_before == float("-inf") else result.closed_before,
            "findings": {name: records(frame) for name, frame in finding_frames(result).items()}}


def write_report(result: Result, info: RunInfo, reports_dir: Path, s3: Any | None = None,
                 bucket: str | None = None) -> Path:
    """Write ``<run_id>.html`` (+ ``.md`` and ``.json``) under ``reports_dir`` and upload them to S3."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    html_path = reports_dir / f"{info.run_id}.html"
    html_path.write_text(to_html(result, info))
    md = to_markdown(result, info, str(html_path))
    (reports_dir / f"{info.run_id}.md").write_text(md)
    (reports_dir / f"{info.run_id}.json").write_text(json.dumps(report_json(result, info), indent=1, allow_nan=False))
    if s3 is not None and bucket:
        for suffix, ctype in ((".html", "text/html"), (".md", "text/markdown"), (".json", "application/json")):
            path = reports_dir / f"{info.run_id}{suffix}"
            s3.put_object(Bucket=bucket, Key=f"reports/{path.name}", Body=path.read_bytes(), ContentType=ctype)
    return html_path
