"""The pure core of the speed layer: a batch of stream records to per-tenant deltas and dead letters.

No I/O here. One pass decodes each record with the event contract's decoder, drops repeats of an
``event_id`` inside the batch (first one wins), and pre-aggregates per tenant: counts per minute × event
type, visitors per hour, page views per hour × path and segment-rule hits per visitor. The aggregates
assume every event is new; when the apply script finds some already applied (a re-read after a crash)
or already seen (a repeated ``event_id``), it names them and :meth:`TenantBatch.without` rebuilds the
aggregates without them (rare, so the common path carries no per-event bookkeeping).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from streaming.events import Event, EventDecoder, Rejection
from streaming.kinesis.processor import StreamRecord
from streaming.segments import SegmentRule


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
    """One tenant's share of a batch, pre-aggregated, plus its events (kept to rebuild without some)."""

    tenant: str
    seqs: list[str] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)  # event_id, 16 bytes
    received: list[float] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    cells: dict[tuple[int, str], int] = field(default_factory=dict)  # (minute, event_type) -> count
    visitors: set[tuple[int, str]] = field(default_factory=set)  # (hour, anonymous_id)
    pages: dict[tuple[int, str], int] = field(default_factory=dict)  # (hour, path) -> page views
    segments: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (rule, anon) -> received ms
    #: 1-based indices of events left out of the aggregates, as the script must confirm (see store).
    excluded: tuple[int, ...] = ()

    @property
    def first_seq(self) -> str:
        return self.seqs[0]

    @property
    def last_seq(self) -> str:
        return self.seqs[-1]

    def totals(self) -> dict[tuple[int, str], int]:
        """(minute, event_type) -> count of the events in the aggregates."""
        return dict(self.cells)

    def packed_ids(self) -> bytes:
        """Every event_id, 16 bytes each, as one string (the script slices it: no per-id decoding)."""
        return b"".join(self.ids)

    def without(self, excluded: set[int], rules: list[SegmentRule] | tuple[SegmentRule, ...]) -> TenantBatch:
        """The same events with the aggregates rebuilt leaving out ``excluded`` (1-based) ones: those the
        script found already applied (marker) or already seen (dedup). Rare: after crashes or repeats."""
        out = TenantBatch(self.tenant, self.seqs, self.ids, self.received, self.events, excluded=tuple(sorted(excluded)))
        kept = [e for i, e in enumerate(self.events, 1) if i not in excluded]
        _add_all(out, kept, _compile(rules))
        return out

    def after(self, marker_seq: str, rules: list[SegmentRule] | tuple[SegmentRule, ...]) -> TenantBatch | None:
        """Only the events after ``marker_seq`` (a re-read straddling the marker), or None if none are."""
        cut = int(marker_seq)
        keep = [i for i, seq in enumerate(self.seqs) if int(seq) > cut]
        if not keep:
            return None
        out = TenantBatch(self.tenant, [self.seqs[i] for i in keep], [self.ids[i] for i in keep],
                          [self.received[i] for i in keep], [self.events[i] for i in keep])
        _add_all(out, out.events, _compile(rules))
        return out

    def payload(self, windows_ms: list[int] | None = None) -> dict[str, Any]:
        """The aggregate arguments of the apply script (msgpack-encoded by the store).

        Segment entries are grouped here by (rule, window-long bucket of the visitor's newest hit), the
        unit the script reads and writes state in, so the script does no per-visitor grouping.
        """
        groups: dict[tuple[int, int], list[list[Any]]] = {}
        for (rule, anon), times in self.segments.items():
            newest = max(times)
            bucket = newest // windows_ms[rule] if windows_ms else 0
            group = groups.get((rule, bucket))
            if group is None:
                group = groups[(rule, bucket)] = [[], [], []]
            group[0].append(anon)
            group[1].append(times)
            group[2].append(newest)
        return {
            "first": self.seqs[0],
            "last": self.seqs[-1],
            "excluded": list(self.excluded),
            "c": [x for (minute, etype), n in self.cells.items() for x in (minute, etype, n)],
            "v": [x for pair in self.visitors for x in pair],
            "p": [x for (hour, path), n in self.pages.items() for x in (hour, path, n)],
            "s": [[rule + 1, bucket, *g] for (rule, bucket), g in groups.items()],
        }


@dataclass
class Batch:
    """What one batch of records becomes: per-tenant deltas and dead letters."""

    tenants: dict[str, TenantBatch] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    records: int = 0
    repeats_in_batch: int = 0


_Compiled = dict[str, list[tuple[int, tuple[tuple[str, str], ...]]]]


def _compile(rules: list[SegmentRule] | tuple[SegmentRule, ...]) -> _Compiled:
    """Rules per event type as (index, where-items), so most events test no rule at all."""
    by_type: _Compiled = {}
    for r, rule in enumerate(rules):
        by_type.setdefault(rule.event_type, []).append((r, tuple(rule.where.items())))
    return by_type


def _add_all(tb: TenantBatch, events: list[Event], rules_by_type: _Compiled) -> None:
    for event in events:
        _add(tb, event, event.received_at.timestamp(), rules_by_type)


def _add(tb: TenantBatch, event: Event, ts: float, rules_by_type: _Compiled) -> None:
    """Fold one event into the aggregates: the hot path, so look-ups are inlined."""
    second = int(ts)
    hour = second // 3600
    etype = event.event_type.value
    anon = event.anonymous_id
    cells = tb.cells
    key: Any = (second // 60, etype)
    cells[key] = cells.get(key, 0) + 1
    tb.visitors.add((hour, anon))
    matching = rules_by_type.get(etype)
    if etype == "page_view":
        path = event.properties.get("path")
        if path.__class__ is str:
            pages = tb.pages
            key = (hour, path)
            pages[key] = pages.get(key, 0) + 1
    if matching:
        props = event.properties
        ms = int(ts * 1000)
        segments = tb.segments
        for r, where in matching:
            for k, v in where:
                if props.get(k) != v:
                    break
            else:
                key = (r, anon)
                times = segments.get(key)
                if times is None:
                    segments[key] = [ms]
                else:
                    times.append(ms)


def aggregate(
    records: list[StreamRecord],
    decoder: EventDecoder,
    rules: list[SegmentRule] | tuple[SegmentRule, ...] = (),
    now: float | None = None,
) -> Batch:
    """Decode, validate, de-duplicate within the batch and pre-aggregate per tenant."""
    with paused_gc():
        return _aggregate(records, decoder, rules, now)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while a batch is handled.

    A batch keeps every decoded event alive (to rebuild aggregates without some), and that many live
    containers made the collector rescan them again and again: it cost more than the decoding. Nothing
    in the batch path creates reference cycles; plain reference counting frees it all afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _aggregate(
    records: list[StreamRecord],
    decoder: EventDecoder,
    rules: list[SegmentRule] | tuple[SegmentRule, ...],
    now: float | None,
) -> Batch:
    limit = decoder.future_limit(time.time() if now is None else now)
    decode = decoder.decode
    batch = Batch(records=len(records))
    tenants = batch.tenants
    seen: set[bytes] = set()
    rules_by_type = _compile(rules)
    dead_letters = batch.dead_letters
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
        tb.seqs.append(record.sequence_number)
        tb.ids.append(eid)
        tb.received.append(ts)
        tb.events.append(event)
        _add(tb, event, ts, rules_by_type)
    return batch
