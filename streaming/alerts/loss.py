"""Incidents from a reconciliation report (the JSON :func:`streaming.reconcile.report.report_json` writes).

One incident per finding verdict and hour: ``loss/<verdict>/<YYYY-MM-DDTHH>``, listing the tenants, event
types and minutes it touches and naming the culprit layer (the engine names the first layer in data-flow
order that lost something). Pending cells are never an incident: a layer that has not read a record yet
has lost nothing. The same loss seen by the next reconciliation (a re-run, ``--hours 6`` every hour) has
the same id, so it is not announced again. An incident clears when a later report covers its whole hour,
finds no finding of its verdict there and none of its cells pending (pending: cannot tell yet).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from streaming.alerts.incidents import Incident, Record

KIND = "loss"
UTC = dt.timezone.utc

#: verdict -> (culprit layer, what happened, what to do)
CULPRITS: dict[str, tuple[str, str, str]] = {
    "archive_missing": ("archive (S3 raw/)", "archive objects listed by their manifests are gone",
                        "check the bucket for deletions or a lifecycle rule on raw/ (S3 server access logs); the "
                        "stream still holds the records for its retention: re-archive the shard range"),
    "warehouse_missing": ("warehouse", "events in the archive are missing from the warehouse",
                          "re-load the hour (`tally batch build --from H --to H`, or re-materialize raw_events in "
                          "Dagster); the report lists the missing event_ids"),
    "warehouse_extra": ("warehouse", "the warehouse holds more events than the archive (duplicates)",
                        "rebuild the hour (`tally batch build --from H --to H`); the report lists the extra event_ids"),
    "speed_missing": ("speed layer (Redis)", "the Redis counters hold fewer events than batch truth",
                      "`tally heal` (or Dagster's speed_heal) overwrites the counters from the warehouse; then find "
                      "why Redis lost writes (failover, eviction: use maxmemory-policy noeviction)"),
    "speed_extra": ("speed layer (Redis)", "the Redis counters hold more events than batch truth",
                    "`tally heal` overwrites the counters from the warehouse"),
    "upstream_gap": ("upstream of the stream (collector)", "source_seq numbers never reached the stream",
                     "check that collector's log and spool for those minutes: the events were lost before Kinesis"),
    "upstream_duplicate": ("upstream of the stream (collector)", "one source_seq number was carried by different events",
                           "check the collector's numbering (two collectors sharing a source_id?)"),
}
_LISTED = 20


def _hour(minute: int) -> str:
    return dt.datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%dT%H")


def _minute(minute: int) -> str:
    return dt.datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cell_line(row: Mapping[str, Any]) -> str:
    verdict = row["verdict"]
    counts = {"archive_missing": f"manifests list {row.get('a')}, objects hold {row.get('ap')}",
              "warehouse_missing": f"archive {row.get('ap')}, warehouse raw {row.get('wr')}, mart {row.get('wm')}",
              "warehouse_extra": f"archive {row.get('a')}, warehouse raw {row.get('wr')}, mart {row.get('wm')}",
              "speed_missing": f"expected {row.get('e')}, Redis has {row.get('s')}",
              "speed_extra": f"expected {row.get('e')}, Redis has {row.get('s')}"}.get(verdict, "")
    return f"- tenant {row['tenant_id']}, {row['event_type']}, minute {_minute(int(row['minute']))}: {counts}"


def _sequence_line(row: Mapping[str, Any]) -> str:
    where = f"minutes {_minute(int(row['min_minute']))} to {_minute(int(row['max_minute']))}" \
        if row.get("min_minute") is not None and row.get("max_minute") is not None else "minutes unknown"
    return (f"- tenant {row['tenant_id']}, source {row['source_id']}: numbers {row.get('first_missing')}.."
            f"{row.get('last_missing')} ({row.get('missing')} missing), {where}")


def loss_incidents(report: Mapping[str, Any], link: str) -> dict[str, Incident]:
    """Every loss or duplicate finding of the report as incidents (see the module docstring)."""
    findings = report.get("findings", {})
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in findings.get("cells", []):
        if row.get("verdict") in CULPRITS:
            groups[(row["verdict"], _hour(int(row["minute"])))].append(row)
    for row in findings.get("sequences", []):
        if row.get("verdict") in CULPRITS and row.get("min_minute") is not None:
            groups[(row["verdict"], _hour(int(row["min_minute"])))].append(row)
    generated = report.get("generated_at")
    since = dt.datetime.fromisoformat(generated).timestamp() if generated else 0.0
    out: dict[str, Incident] = {}
    for (verdict, hour), rows in sorted(groups.items()):
        culprit, what, todo = CULPRITS[verdict]
        is_cell = "minute" in rows[0]
        lines = [(_cell_line if is_cell else _sequence_line)(r) for r in rows[:_LISTED]]
        if len(rows) > _LISTED:
            lines.append(f"- ... and {len(rows) - _LISTED} more (see the report)")
        tenants = sorted({str(r["tenant_id"]) for r in rows})
        first = rows[0]
        where = f"tenant {first['tenant_id']}" + (f", {first['event_type']}, minute {_minute(int(first['minute']))}"
                                                  if is_cell else f", source {first['source_id']}")
        more = f" (+{len(rows) - 1} more)" if len(rows) > 1 else ""
        kind = "DUPLICATES" if verdict.endswith(("extra", "duplicate")) else "LOSS"
        incident_id = f"{KIND}/{verdict}/{hour}"
        out[incident_id] = Incident(
            id=incident_id, kind=KIND, severity="failure" if kind == "LOSS" else "warning",
            title=f"tally {kind}: {verdict} in the {culprit}, {where}{more}",
            body=(f"What: {what} ({verdict}), found by reconciliation run {report.get('run_id')}.\n"
                  f"Where: the {culprit}; hour {hour}:00 UTC; {len(rows)} "
                  f"{'cells' if is_cell else 'gaps'} of {len(tenants)} tenant(s):\n" + "\n".join(lines) + "\n"
                  f"Since: first seen {report.get('generated_at')} (reconciling {report.get('from')} to {report.get('to')}).\n"
                  f"What to do: {todo}.\nReport: {link}"),
            since=since,
            detail={"verdict": verdict, "hour": hour,
                    "cells": [[r["tenant_id"], r["event_type"], int(r["minute"])] for r in rows if "minute" in r],
                    "report": link},
        )
    return out


def cleared_by(report: Mapping[str, Any]) -> Any:
    """The ``cleared`` callback for :meth:`Alerter.sync`: an open loss incident is cleared by ``report``
    when it covers the incident's whole hour, which is closed, and none of its cells is pending there."""
    start, end = _iso_minute(report.get("from")), _iso_minute(report.get("to"))
    closed_before = report.get("closed_before")
    pending = {(r["tenant_id"], r["event_type"], int(r["minute"]))
               for r in report.get("findings", {}).get("cells", []) if r.get("verdict") == "pending"}

    def cleared(record: Record) -> str | None:
        detail = record.incident.detail
        hour_start = int(dt.datetime.strptime(detail["hour"], "%Y-%m-%dT%H").replace(tzinfo=UTC).timestamp()) // 60
        if start is None or end is None or not (start <= hour_start and hour_start + 60 <= end):
            return None
        if closed_before is None or closed_before < (hour_start + 60) * 60:
            return None
        if any(tuple(c) in pending for c in detail.get("cells", [])):
            return None
        return (f"reconciliation run {report.get('run_id')} finds no {detail['verdict']} in hour "
                f"{detail['hour']}:00 UTC any more")

    return cleared


def _iso_minute(text: str | None) -> int | None:
    if not text:
        return None
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()) // 60
