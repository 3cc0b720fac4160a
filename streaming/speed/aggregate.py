"""The pure core of the speed layer: a batch of stream records to per-tenant deltas and dead letters.

No I/O here. One pass decodes each record with the event contract's decoder, drops repeats of an
``event_id`` inside the batch (first one wins), and pre-aggregates per tenant: counts per minute × event
type, visitors per hour, page views per hour × path and segment-rule hits per visitor. Each event also
keeps the indices of the aggregates it contributed to, so the Lua apply can take an event back out when
Redis says it was already applied (a replayed record) or already seen (a duplicate ``event_id``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from streaming.events import Event, EventDecoder, Rejection
from streaming.kinesis.processor import StreamRecord
from streaming.segments import SegmentRule


def _join(values: list[Any]) -> str:
    # Redis Lua's cmsgpack has no bin type, so lazily-read arrays travel as comma-separated text.
    return ",".join(map(str, values))


@dataclass(frozen=True)
class DeadLetter:
    """A record that is not a valid event, where it was in the stream, and why."""

    shard_id: str
    sequence_number: str
    reason: str
    detail: str
    raw: bytes
    arrival_ts: float

    @property
    def entry_id(self) -> str:
        # Keyed by position in the stream so that re-reading the record writes the same entry.
        return f"{self.shard_id}/{self.sequence_number}"


@dataclass
class TenantBatch:
    """One tenant's share of a batch, pre-aggregated; 1-based indices (Lua's) link events to aggregates."""

    tenant: str
    seqs: list[str] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)  # event_id, 16 bytes
    received: list[float] = field(default_factory=list)
    ev_cell: list[int] = field(default_factory=list)
    ev_visitor: list[int] = field(default_factory=list)
    ev_page: list[int] = field(default_factory=list)  # 0 = not a page view
    cells: dict[tuple[int, str], int] = field(default_factory=dict)  # (minute, event_type) -> index
    cell_counts: list[int] = field(default_factory=list)
    visitors: dict[tuple[int, str], int] = field(default_factory=dict)  # (hour, anonymous_id) -> index
    visitor_counts: list[int] = field(default_factory=list)
    pages: dict[tuple[int, str], int] = field(default_factory=dict)  # (hour, path) -> index
    page_counts: list[int] = field(default_factory=list)
    segments: dict[tuple[int, str], int] = field(default_factory=dict)  # (rule index, anonymous_id) -> index
    segment_times: list[list[int]] = field(default_factory=list)  # received_at ms per segment entry
    segment_hits: list[int] = field(default_factory=list)  # flat (event index, entry index, ms) triples

    @property
    def last_seq(self) -> str:
        return self.seqs[-1]

    def event_count(self) -> int:
        return len(self.ids)

    def totals(self) -> dict[tuple[int, str], int]:
        """(minute, event_type) -> count, assuming every event is new (tests and the Lambda report)."""
        return {key: self.cell_counts[i - 1] for key, i in self.cells.items()}

    def packed_ids(self) -> bytes:
        """Every event_id, 16 bytes each, as one string (the script slices it: no per-id decoding)."""
        return b"".join(self.ids)

    def payload(self) -> dict[str, Any]:
        """The compact argument of the apply script (msgpack-encoded by the store)."""
        # Per-event arrays the script needs only to take events back out travel as text,
        # so the common case (nothing to take out) does not pay for unpacking them into Lua tables.
        return {
            "first": self.seqs[0],
            "last": self.seqs[-1],
            "seq": _join(self.seqs),
            "ec": _join(self.ev_cell),
            "ev": _join(self.ev_visitor),
            "ep": _join(self.ev_page),
            "c": [x for (minute, etype), i in self.cells.items() for x in (minute, etype, self.cell_counts[i - 1])],
            "v": [x for (hour, anon), i in self.visitors.items() for x in (hour, anon, self.visitor_counts[i - 1])],
            "p": [x for (hour, path), i in self.pages.items() for x in (hour, path, self.page_counts[i - 1])],
            "s": [[rule + 1, anon, self.segment_times[i - 1]] for (rule, anon), i in self.segments.items()],
            "sh": _join(self.segment_hits),
        }


@dataclass
class Batch:
    """What one batch of records becomes: per-tenant deltas and dead letters."""

    tenants: dict[str, TenantBatch] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    records: int = 0
    repeats_in_batch: int = 0


def aggregate(
    records: list[StreamRecord],
    decoder: EventDecoder,
    rules: list[SegmentRule] | tuple[SegmentRule, ...] = (),
    now: float | None = None,
) -> Batch:
    """Decode, validate, de-duplicate within the batch and pre-aggregate per tenant."""
    limit = decoder.future_limit(time.time() if now is None else now)
    decode = decoder.decode
    batch = Batch(records=len(records))
    tenants = batch.tenants
    seen: set[bytes] = set()
    # Rules compiled per event type to (index, where-items) so most events test no rule at all.
    rules_by_type: dict[str, list[tuple[int, tuple[tuple[str, str], ...]]]] = {}
    for r, rule in enumerate(rules):
        rules_by_type.setdefault(rule.event_type, []).append((r, tuple(rule.where.items())))
    dead_letters = batch.dead_letters
    # The loop below is the hot path of the speed layer (~every event of every batch): dictionary
    # look-ups are inlined rather than calling a helper per aggregate.
    for record in records:
        event = decode(record.data, limit)
        if type(event) is not Event:
            assert isinstance(event, Rejection)
            dead_letters.append(DeadLetter(
                record.shard_id, record.sequence_number, event.reason.value, event.detail, event.raw, record.arrival_ts,
            ))
            continue
        eid = event.event_id.bytes
        if eid in seen:
            batch.repeats_in_batch += 1
            continue
        seen.add(eid)
        tenant = event.tenant_id
        tb = tenants.get(tenant)
        if tb is None:
            tb = tenants[tenant] = TenantBatch(tenant)
        ts = event.received_at.timestamp()
        second = int(ts)
        hour = second // 3600
        etype = event.event_type.value
        anon = event.anonymous_id
        tb.seqs.append(record.sequence_number)
        tb.ids.append(eid)
        tb.received.append(ts)
        index = len(tb.ids)

        key: Any = (second // 60, etype)
        i = tb.cells.get(key)
        if i is None:
            tb.cell_counts.append(1)
            i = tb.cells[key] = len(tb.cell_counts)
        else:
            tb.cell_counts[i - 1] += 1
        tb.ev_cell.append(i)

        key = (hour, anon)
        i = tb.visitors.get(key)
        if i is None:
            tb.visitor_counts.append(1)
            i = tb.visitors[key] = len(tb.visitor_counts)
        else:
            tb.visitor_counts[i - 1] += 1
        tb.ev_visitor.append(i)

        props = event.properties
        path = props.get("path") if etype == "page_view" else None
        if path.__class__ is str:
            key = (hour, path)
            i = tb.pages.get(key)
            if i is None:
                tb.page_counts.append(1)
                i = tb.pages[key] = len(tb.page_counts)
            else:
                tb.page_counts[i - 1] += 1
            tb.ev_page.append(i)
        else:
            tb.ev_page.append(0)

        matching = rules_by_type.get(etype)
        if matching:
            ms = int(ts * 1000)
            for r, where in matching:
                for k, v in where:
                    if props.get(k) != v:
                        break
                else:
                    key = (r, anon)
                    entry = tb.segments.get(key)
                    if entry is None:
                        tb.segment_times.append([ms])
                        entry = tb.segments[key] = len(tb.segment_times)
                    else:
                        tb.segment_times[entry - 1].append(ms)
                    tb.segment_hits.extend((index, entry, ms))
    return batch
