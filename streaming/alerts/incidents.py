"""Incidents: one alert when a problem starts, one "resolved" when it clears, nothing in between.

Each open incident is one JSON object in the bucket, ``reports/incidents/open/<id>.json`` (moved under
``reports/incidents/resolved/`` once its resolution is delivered). S3, because the bucket is each
environment's durable store already (reports and deletion audits live there), Dagster's IAM already
writes ``reports/*``, and any process that sends — the daemon's sensors, a second daemon after a
failover — sees the same state; a sensor's cursor is private to one sensor. Every kind of incident has
one writer (the sensor of that kind: Dagster runs one tick of a sensor at a time), so a record is never
written by two at once.

A record lists the channels that took its messages: a channel that failed is retried on the next
evaluation, the others are not sent the message again. With no channel configured the alert is only
logged (and the incident still recorded, so configuring one later does not replay history).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from streaming.alerts.notify import Notifier

log = logging.getLogger(__name__)

PREFIX = "reports/incidents"


@dataclass
class Incident:
    """What is wrong now. ``id`` is stable for the same problem (e.g. ``loss/speed_missing/2026-01-07T08``):
    seeing it again is not a new incident. ``detail`` is kept for deciding when it has cleared."""

    id: str
    kind: str
    title: str
    body: str
    since: float
    severity: str = "failure"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    """The stored state of an open incident."""

    incident: Incident
    opened_at: float
    delivered: list[str] = field(default_factory=list)
    resolved_at: float | None = None
    resolution: str = ""
    resolved_delivered: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Record:
        doc = json.loads(raw)
        return cls(incident=Incident(**doc.pop("incident")), **doc)


def utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class IncidentStore:
    """Open incidents in S3 (see the module docstring)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    @staticmethod
    def _key(state: str, incident_id: str) -> str:
        return f"{PREFIX}/{state}/{incident_id}.json"

    def open(self, kind: str) -> dict[str, Record]:
        out: dict[str, Record] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{PREFIX}/open/{kind}/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.s3.list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                record = Record.from_json(self.s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read())
                out[record.incident.id] = record
            token = page.get("NextContinuationToken")
            if not token:
                return out

    def save(self, record: Record) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key("open", record.incident.id), Body=record.to_json(),
                           ContentType="application/json")

    def close(self, record: Record) -> None:
        """Move a resolved incident out of the open set (kept for the audit trail)."""
        stamp = dt.datetime.fromtimestamp(record.resolved_at or time.time(), tz=dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.s3.put_object(Bucket=self.bucket, Key=self._key("resolved", f"{record.incident.id}@{stamp}"),
                           Body=record.to_json(), ContentType="application/json")
        self.s3.delete_object(Bucket=self.bucket, Key=self._key("open", record.incident.id))


@dataclass
class SyncReport:
    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)


class Alerter:
    """Announces new incidents and resolves cleared ones, once each (see the module docstring)."""

    def __init__(self, store: IncidentStore, notifier: Notifier, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.notifier = notifier
        self.clock = clock

    def sync(self, kind: str, current: Mapping[str, Incident],
             cleared: Callable[[Record], str | None]) -> SyncReport:
        """``current``: the incidents of ``kind`` seen now. An open one not seen now is resolved when
        ``cleared(record)`` gives the reason it cleared (None: cannot tell yet, e.g. a range not covered)."""
        report = SyncReport()
        records = self.store.open(kind)
        for incident_id, incident in sorted(current.items()):
            record = records.get(incident_id)
            if record is None:
                record = Record(incident, opened_at=self.clock())
                self.store.save(record)  # before sending: a crash in between cannot send it twice
                report.opened.append(incident_id)
                log.warning("incident opened: %s", incident.title, extra={"incident": incident_id, "kind": kind})
            self._deliver(record, report)
        for incident_id, record in sorted(records.items()):
            if incident_id in current:
                continue
            why = record.resolution if record.resolved_at is not None else cleared(record)
            if why is None:
                continue
            if record.resolved_at is None:
                record.resolved_at, record.resolution = self.clock(), why
                self.store.save(record)
                report.resolved.append(incident_id)
                log.info("incident resolved: %s (%s)", record.incident.title, why,
                         extra={"incident": incident_id, "kind": kind})
            self._deliver_resolution(record, report)
        return report

    def _deliver(self, record: Record, report: SyncReport) -> None:
        missing = [c.id for c in self.notifier.channels if c.id not in record.delivered]
        if not missing:
            return
        incident = record.incident
        results = self.notifier.send(incident.title, incident.body, incident.severity, only=missing)
        self._settle(record, record.delivered, results, report)

    def _deliver_resolution(self, record: Record, report: SyncReport) -> None:
        missing = [c.id for c in self.notifier.channels if c.id not in record.resolved_delivered]
        if missing:
            incident = record.incident
            opened = record.incident.since
            body = (f"Resolved at {utc(record.resolved_at or self.clock())}: {record.resolution}.\n"
                    f"It had been open since {utc(opened)} ({_duration((record.resolved_at or self.clock()) - opened)}).\n\n"
                    f"The alert was: {incident.title}")
            results = self.notifier.send(f"RESOLVED: {incident.title}", body, "resolved", only=missing)
            self._settle(record, record.resolved_delivered, results, report)
        if all(c.id in record.resolved_delivered for c in self.notifier.channels):
            self.store.close(record)

    def _settle(self, record: Record, delivered: list[str], results: dict[str, bool], report: SyncReport) -> None:
        delivered.extend(cid for cid, ok in results.items() if ok)
        if not all(results.values()):
            report.undelivered.append(record.incident.id)
        if results:
            self.store.save(record)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"
