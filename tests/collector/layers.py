"""Every layer's view of what the collector delivered, for the end-to-end collector tests: the speed
layer's counters (Redis), the archive's events and dead letters (S3), the warehouse's minute mart (dbt)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import duckdb

from streaming.archive.batch import decode_lines, record_bytes
from streaming.archive.store import ArchiveStore
from streaming.events import Event, EventDecoder, Rejection
from streaming.settings import Settings
from tests.reconcile import pipeline
from tests.speed.conftest import read_minute_counts

Cells = dict[tuple[str, str, int], int]


def run_layers(settings: Settings, kinesis: Any, dynamodb: Any, s3: Any, redis_client: Any, tmp: Path) -> None:
    """The speed consumer and the archiver to the stream's end, then the warehouse load and dbt."""
    from streaming.resources import ensure_bucket

    ensure_bucket(s3, settings.bucket, "us-east-1")
    from streaming.resources import ensure_lease_table

    ensure_lease_table(dynamodb, settings.lease_table)
    pipeline.run_speed(settings, kinesis, dynamodb, redis_client)
    pipeline.run_archiver(settings, kinesis, dynamodb, s3)
    pipeline.load_warehouse(settings, s3)
    pipeline.run_dbt(settings, tmp, "+fct_event_counts_minute")


def speed_cells(redis_client: Any) -> Cells:
    return read_minute_counts(redis_client)


def archive_contents(s3: Any, bucket: str) -> tuple[list[Event], list[Rejection]]:
    store = ArchiveStore(s3, bucket)
    decoder = EventDecoder()
    events: list[Event] = []
    rejected: list[Rejection] = []
    for hour in store.hours_with_objects():
        for obj in store.committed_objects(hour):
            for line in decode_lines(store.read_object(obj.key)):
                out = decoder.decode(record_bytes(line))
                (events if isinstance(out, Event) else rejected).append(out)  # type: ignore[arg-type]
    return events, rejected


def distinct_cells(events: list[Event]) -> Cells:
    """Per tenant × type × minute, each event_id once (its earliest received_at, as every layer keeps)."""
    first: dict[str, Event] = {}
    for e in events:
        kept = first.get(str(e.event_id))
        if kept is None or e.received_at < kept.received_at:
            first[str(e.event_id)] = e
    return dict(Counter((e.tenant_id, e.event_type.value, e.minute) for e in first.values()))


def warehouse_cells(duckdb_path: Path) -> Cells:
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        rows = con.execute("select tenant_id, event_type, (epoch(minute_at) // 60)::bigint, event_count "
                           "from marts.fct_event_counts_minute").fetchall()
    return {(t, e, int(m)): int(n) for t, e, m, n in rows}
