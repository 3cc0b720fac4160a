"""The pure core of the speed layer: a batch of stream records to per-tenant deltas and dead letters.

No I/O here. One pass decodes each record with the event contract's decoder, drops repeats of an
``event_id`` inside the batch (first one wins), and pre-aggregates per tenant: counts per minute × event
type, visitors per hour, page views per hour × path and segment-rule hits per visitor. The aggregates
assume every event is new; when the apply script finds some already applied (a re-read after a crash)
or already seen (a repeated ``event_id``), it names them and :meth:`TenantBatch.without` rebuilds the
aggregates without them (rare, so the common path carries no per-event bookkeeping).
"""

from __future__ import annotations

import datetime as dt
import gc
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import DecodeError

from streaming.events import Event, EventDecoder, EventType, Rejection, record_tenant, sequence_position
from streaming.kinesis.processor import StreamRecord
from streaming.segments import SegmentRule
from streaming.speed.recent import RecentIds
from streaming.speed.suppress import Suppressions


@dataclass(frozen=True)
class DeadLetter:
    """A record that is not a valid event, where it was in the stream, and why."""

    shard_id: str
    sequence_number: str
    reason: str
    detail: str
    raw: bytes
    arrival_ts: float
    #: Read from the raw bytes as far as they parse (None otherwise): the tenant when it is a valid id
    #: (its hash tag), and the collector's numbers (a dead letter holds its source_seq: no upstream gap).
    tenant_id: str | None = None
    source_id: str | None = None
    source_seq: int | None = None

    @property
    def entry_id(self) -> str:
        # Keyed by position in the stream so that re-reading the record writes the same entry.
        return f"{self.shard_id}/{self.sequence_number}"


@dataclass
class TenantBatch:
    """One tenant's share of a batch, pre-aggregated, plus its records (kept to rebuild without some).

    The decoded events are not kept: holding ~2,500 of them alive per chunk cost more in allocation
    than decoding a record again on the rare rebuild path.
    """

    tenant: str
    records: list[StreamRecord] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)  # event_id, 16 bytes
    received: list[float] = field(default_factory=list)
    cells: dict[tuple[int, str], int] = field(default_factory=dict)  # (minute, event_type) -> count
    visitors: set[tuple[int, str]] = field(default_factory=set)  # (hour, anonymous_id)
    pages: dict[tuple[int, str], int] = field(default_factory=dict)  # (hour, path) -> page views
    segments: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (rule, anon) -> received ms
    #: 1-based indices of events left out of the aggregates, as the script must confirm (see store).
    excluded: tuple[int, ...] = ()
    #: The tenant's suppression list as aggregated with (see ``streaming/speed/suppress.py``): its version,
    #: subject_hash -> since_ms (None when empty), and (minute, event_type) -> suppressed events.
    sup_version: int = 0
    suppressed: dict[str, int] | None = None
    suppressions: Suppressions | None = None
    sup: dict[tuple[int, str], int] = field(default_factory=dict)

    def _like(self, records: list[StreamRecord], ids: list[bytes], received: list[float],
              excluded: tuple[int, ...] = ()) -> TenantBatch:
        return TenantBatch(self.tenant, records, ids, received, excluded=excluded, sup_version=self.sup_version,
                           suppressed=self.suppressed, suppressions=self.suppressions)

    def resuppressed(self, rules: list[SegmentRule] | tuple[SegmentRule, ...]) -> TenantBatch:
        """Rebuilt with the suppression list its ``suppressions`` holds now (the script found a newer one)."""
        assert self.suppressions is not None
        out = self._like(self.records, self.ids, self.received, self.excluded)
        out.sup_version = self.suppressions.version(self.tenant)
        out.suppressed = self.suppressions.since_map(self.tenant)
        excluded = set(self.excluded)
        _add_all(out, [r for i, r in enumerate(self.records, 1) if i not in excluded], _compile(rules))
        return out

    @property
    def seqs(self) -> list[str]:
        return [r.sequence_number for r in self.records]

    @property
    def first_seq(self) -> str:
        return self.records[0].sequence_number

    @property
    def last_seq(self) -> str:
        return self.records[-1].sequence_number

    def totals(self) -> dict[tuple[int, str], int]:
        """(minute, event_type) -> count of the events in the aggregates."""
        return dict(self.cells)

    def without(self, excluded: set[int], rules: list[SegmentRule] | tuple[SegmentRule, ...]) -> TenantBatch:
        """The same events with the aggregates rebuilt leaving out ``excluded`` (1-based) ones: those the
        script found already applied (marker) or already seen (dedup). Rare: after crashes or repeats."""
        out = self._like(self.records, self.ids, self.received, tuple(sorted(excluded)))
        _add_all(out, [r for i, r in enumerate(self.records, 1) if i not in excluded], _compile(rules))
        return out

    def after(self, marker_seq: str, rules: list[SegmentRule] | tuple[SegmentRule, ...]) -> TenantBatch | None:
        """Only the events after ``marker_seq`` (a re-read straddling the marker), or None if none are."""
        cut = int(marker_seq)
        keep = [i for i, r in enumerate(self.records) if int(r.sequence_number) > cut]
        if not keep:
            return None
        out = self._like([self.records[i] for i in keep], [self.ids[i] for i in keep], [self.received[i] for i in keep])
        _add_all(out, out.records, _compile(rules))
        return out

    def payload(self, rules: list[tuple[int, int]] | None = None) -> dict[str, Any]:
        """The aggregate arguments of the apply script (msgpack-encoded by the store).

        Work that needs no stored state is done here rather than in the script: visitors come grouped
        by hour; a visitor's segment hits come sorted, cut to the newest ``min_count`` inside the rule's
        window (epoch ms, ascending: the state, which the script stores msgpack-encoded), grouped by
        (rule, window-long bucket of the newest hit) — the unit the script reads and writes state in.
        The script only merges with a stored state when one exists. ``rules`` holds (min_count,
        window_ms) per rule.
        """
        if _native is not None and rules is not None:
            v: Any = msgspec.Raw(_native.visitor_groups(self.visitors))
            s: Any = msgspec.Raw(_native.segment_groups(self.segments, rules))
        else:
            v, s = self._sections_python(rules)
        return {
            "first": self.first_seq,
            "last": self.last_seq,
            "excluded": list(self.excluded),
            "c": [x for (minute, etype), n in self.cells.items() for x in (minute, etype, n)],
            "v": v,
            "p": [x for (hour, path), n in self.pages.items() for x in (hour, path, n)],
            "s": s,
            "sv": self.sup_version,
            "x": [x for (minute, etype), n in self.sup.items() for x in (minute, etype, n)],
        }

    def _sections_python(self, rules: list[tuple[int, int]] | None) -> tuple[list[Any], list[Any]]:
        """The reference of the payload's "v" and "s" (``_payload.c`` encodes the same, byte for byte)."""
        by_hour: dict[int, list[str]] = {}
        for hour, anon in self.visitors:
            members = by_hour.get(hour)
            if members is None:
                by_hour[hour] = [anon]
            else:
                members.append(anon)
        groups: dict[tuple[int, int], list[list[Any]]] = {}
        shapes = rules or [(1, 1)] * (1 + max((r for r, _ in self.segments), default=0))
        for (rule, anon), times in self.segments.items():
            k, window = shapes[rule]
            if len(times) == 1:  # the common case: one hit of the visitor in this batch
                keep = times
                newest = times[0]
            else:
                times.sort()
                newest = times[-1]
                keep = [t for t in times[-k:] if t > newest - window]
            key = (rule, newest // window)
            group = groups.get(key)
            if group is None:
                group = groups[key] = [[], [], [], []]
            group[0].append(anon)
            if k > 1:  # a one-hit rule keeps no state (its membership score is the state: apply.lua)
                group[1].append(_packed_state(keep))
            group[2].append(keep[0])
            group[3].append(len(keep))
        return list(by_hour.items()), [[rule + 1, bucket, *g] for (rule, bucket), g in groups.items()]


_pack_state = msgspec.msgpack.Encoder().encode


def _packed_state(times: list[int]) -> msgspec.Raw:
    """A segment state as the script stores it (msgpack, ascending epoch ms), wrapped as a msgpack *string*
    inside the payload: the script gets the stored form as is and writes it without packing it again
    (a fresh state, the common case, then costs the script no msgpack work at all)."""
    body = _pack_state(times)
    n = len(body)
    if n < 32:
        head = bytes((0xA0 | n,))
    elif n < 256:
        head = bytes((0xD9, n))
    elif n < 65_536:
        head = b"\xda" + n.to_bytes(2, "big")
    else:
        head = b"\xdb" + n.to_bytes(4, "big")
    return msgspec.Raw(head + body)


@dataclass
class Batch:
    """What one batch of records becomes: per-tenant deltas and dead letters."""

    tenants: dict[str, TenantBatch] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    records: int = 0
    repeats_in_batch: int = 0


try:
    from streaming.speed import _native
except ImportError:  # not compiled (see ext-modules in pyproject.toml): the Python reference paths do the same, more slowly
    _native = None

#: The event types in the order the scanner indexes them.
_ETYPE_VALUES: tuple[str, ...] = tuple(t.value for t in EventType)
_ETYPE_INDEX = {t: j for j, t in enumerate(EventType)}
_PAGE_VIEW = _ETYPE_VALUES.index("page_view")

_Compiled = dict[str, list[tuple[int, tuple[tuple[str, Any], ...]]]]


def _compile(rules: list[SegmentRule] | tuple[SegmentRule, ...]) -> _Compiled:
    """Rules per event type as (index, where-items), so most events test no rule at all."""
    by_type: _Compiled = {}
    for r, rule in enumerate(rules):
        by_type.setdefault(rule.event_type, []).append((r, tuple(rule.where.items())))
    return by_type


#: Re-decodes records that already passed the contract (rebuild path only: no checks needed again).
_redecode = msgspec.json.Decoder(Event).decode


def _add_all(tb: TenantBatch, records: list[StreamRecord], rules_by_type: _Compiled) -> None:
    events = [_redecode(record.data) for record in records]
    _fold({tb.tenant: tb}, events, [e.received_at.timestamp() for e in events], rules_by_type)


def _fold(tenants: dict[str, TenantBatch], events: list[Event], stamps: list[float],
          rules_by_type: _Compiled) -> None:
    """Fold decoded events (``stamps``: their ``received_at`` as epoch seconds) into their tenants'
    aggregates: the reference path, and the rebuild path (:meth:`TenantBatch.without` and the like, rare).

    Events of a subject on a tenant's suppression list go through :func:`_add_forgotten`; the rest
    through :func:`_fold_python`, which the scanner's C fold (``Scan.fold``) must equal.
    """
    if any(tb.suppressed is not None for tb in tenants.values()):
        normal = [i for i, (e, ts) in enumerate(zip(events, stamps))
                  if tenants[e.tenant_id].suppressed is None or not _add_forgotten(tenants[e.tenant_id], e, ts)]
        if len(normal) < len(events):
            events, stamps = [events[i] for i in normal], [stamps[i] for i in normal]
    _fold_python(tenants, events, stamps, rules_by_type)


def _fold_python(tenants: dict[str, TenantBatch], events: list[Event], stamps: list[float],
                 rules_by_type: _Compiled) -> None:
    """The reference fold. Column by column: each step is one comprehension or one ``Counter`` / ``set``
    over ``zip``s, with the tenant in every key, so one pass serves every tenant of the batch."""
    tids = [e.tenant_id for e in events]
    seconds = [int(ts) for ts in stamps]
    hours = [s // 3600 for s in seconds]
    etypes = [e.event_type._value_ for e in events]
    anons = [e.anonymous_id for e in events]
    for (t, minute, etype), n in Counter(zip(tids, [s // 60 for s in seconds], etypes)).items():
        cells = tenants[t].cells
        key = (minute, etype)
        cells[key] = cells.get(key, 0) + n
    for t, hour, anon in set(zip(tids, hours, anons)):
        tenants[t].visitors.add((hour, anon))
    views = Counter([(t, hour, path) for t, hour, etype, e in zip(tids, hours, etypes, events)
                     if etype == "page_view" and (path := e.properties.get("path")).__class__ is str])
    for (t, hour, path), n in views.items():
        pages = tenants[t].pages
        key = (hour, path)
        pages[key] = pages.get(key, 0) + n
    for etype, matching in rules_by_type.items():
        candidates = [i for i, et in enumerate(etypes) if et == etype]
        if not candidates:
            continue
        for r, where in matching:
            hits = candidates
            for k, v in where:
                hits = [i for i in hits if events[i].properties.get(k) == v]
            for i in hits:
                segments = tenants[tids[i]].segments
                key = (r, anons[i])
                times = segments.get(key)
                if times is None:
                    segments[key] = [int(stamps[i] * 1000)]
                else:
                    times.append(int(stamps[i] * 1000))


def _add_forgotten(tb: TenantBatch, event: Event, ts: float) -> bool:
    """Fold an event of a suppressed subject (True), or leave it to the normal path (False).

    The counting rule of ``streaming/privacy/suppression.py``: received at or after the suppression
    started, it is suppressed (counted apart, per minute x event type); received before, it counts
    toward the aggregates (counts and page views are not personal data) but leaves no per-visitor
    state (no unique-visitor entry, no segment state or membership).
    """
    assert tb.suppressions is not None and tb.suppressed is not None
    since = tb.suppressions.subject_since(tb.tenant, tb.suppressed, event.user_id, event.anonymous_id)
    if since is None:
        return False
    etype = event.event_type._value_
    minute = int(ts) // 60
    target = tb.sup if ts * 1000 >= since else tb.cells
    target[(minute, etype)] = target.get((minute, etype), 0) + 1
    if target is tb.cells and etype == "page_view":
        path = event.properties.get("path")
        if path.__class__ is str:
            key = (int(ts) // 3600, path)
            tb.pages[key] = tb.pages.get(key, 0) + 1
    return True


def aggregate(
    records: list[StreamRecord],
    decoder: EventDecoder,
    rules: list[SegmentRule] | tuple[SegmentRule, ...] = (),
    now: float | None = None,
    suppressions: Suppressions | None = None,
    recent: RecentIds | None = None,
) -> Batch:
    """Decode, validate, de-duplicate within the batch and pre-aggregate per tenant.

    ``suppressions`` gives each tenant the suppression list this process knows (the apply script checks
    its version); ``recent`` the ids this processor applied a moment ago, whose repeats are dropped here.
    """
    with paused_gc():
        return _aggregate(records, decoder, rules, now, suppressions, recent)


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
    suppressions: Suppressions | None,
    recent: RecentIds | None,
) -> Batch:
    """The hot loop only decodes (the contract's typed decode, called directly; records that fail it, or
    the size and clock checks, go through ``decoder.decode`` for their reason code); de-duplication,
    grouping per tenant and the aggregates then go column by column (:func:`_fold`)."""
    now = time.time() if now is None else now
    limit = decoder.future_limit(now)
    batch = Batch(records=len(records))
    wanted = _wanted_keys(rules)
    if _native is not None and len(wanted) <= _SCAN_MAX_WANTED:
        _aggregate_scanned(batch, records, decoder, rules, wanted, now, limit, suppressions, recent)
        return batch
    typed_decode = decoder.typed_decode
    max_bytes = decoder.max_bytes
    dead_letters = batch.dead_letters
    events: list[Event] = []
    kept: list[StreamRecord] = []
    keep_event, keep_record = events.append, kept.append
    decode_errors = (DecodeError, UnicodeDecodeError)
    for record in records:
        data = record.data
        if len(data) <= max_bytes:
            try:
                event = typed_decode(data)
            except decode_errors:
                pass
            else:
                if event.received_at <= limit:
                    keep_event(event)
                    keep_record(record)
                    continue
        rejection = decoder.decode(data, limit)
        assert isinstance(rejection, Rejection)
        dead_letters.append(dead_letter(record, rejection))
    ids = _event_ids(events)
    first = _first_sightings(ids, recent, now)
    if first is not None:
        batch.repeats_in_batch = len(ids) - len(first)
        events, kept, ids = [events[i] for i in first], [kept[i] for i in first], [ids[i] for i in first]
    stamps, groups = _by_tenant(events, kept, ids)
    _new_tenants(batch, groups, suppressions)
    _fold(batch.tenants, events, stamps, _compile(rules))
    return batch


def dead_letter(record: StreamRecord, rejection: Rejection) -> DeadLetter:
    """A record the contract rejected, where it was in the stream, and why."""
    position = sequence_position(rejection.raw)
    return DeadLetter(record.shard_id, record.sequence_number, rejection.reason.value, rejection.detail,
                      rejection.raw, record.arrival_ts, record_tenant(rejection.raw),
                      position.source_id if position else None, position.source_seq if position else None)


def _new_tenants(batch: Batch, groups: dict[str, tuple[list[StreamRecord], list[bytes], list[float]]],
                 suppressions: Suppressions | None) -> None:
    for tenant, (tenant_records, tenant_ids, received) in groups.items():
        tb = batch.tenants[tenant] = TenantBatch(tenant, tenant_records, tenant_ids, received)
        if suppressions is not None:
            tb.suppressions = suppressions
            tb.sup_version = suppressions.version(tenant)
            tb.suppressed = suppressions.since_map(tenant)


#: Property keys the scanner extracts at most (MAX_WANTED in _scan.c); rules naming more take the reference path.
_SCAN_MAX_WANTED = 64
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)


def _aggregate_scanned(batch: Batch, records: list[StreamRecord], decoder: EventDecoder,
                       rules: list[SegmentRule] | tuple[SegmentRule, ...], wanted: tuple[str, ...], now: float,
                       limit: dt.datetime, suppressions: Suppressions | None, recent: RecentIds | None) -> None:
    """The same steps over the C scanner's columns (``_scan.c``): records it declines (anything but the
    plainest JSON, and every record of a tenant with a suppression list, whose subjects the fold must see
    as events) are judged by the contract's decoder as above, and the valid ones are put into the same
    columns, so one fold serves both. No event object is made for a scanned record."""
    skip_tenants = suppressions.tenants_with_lists() if suppressions is not None else frozenset()
    scan, declined = _native.scan(records, decoder.max_bytes, (limit - _EPOCH) // _US, _ETYPE_VALUES, wanted,
                                  skip_tenants)
    events: dict[int, Event] = {}  # declined records the contract accepted, by record index
    for i in declined:
        record = records[i]
        event = decoder.decode(record.data, limit)
        if isinstance(event, Rejection):
            batch.dead_letters.append(dead_letter(record, event))
            continue
        events[i] = event
        props = event.properties
        scan.put(i, event.tenant_id, _ETYPE_INDEX[event.event_type], event.anonymous_id,
                 (event.received_at - _EPOCH) // _US, event.event_id.bytes, tuple(props.get(k) for k in wanted))
    ids = scan.ids()
    first = _first_sightings(ids, recent, now)
    if first is not None:
        batch.repeats_in_batch = len(ids) - len(first)
    _new_tenants(batch, scan.by_tenant(first), suppressions)
    forgotten: set[int] | None = None
    if skip_tenants and events:
        order = scan.order()
        kept = order if first is None else [order[k] for k in first]
        forgotten = set()
        for i in kept:
            event = events.get(i)
            if event is not None:
                tb = batch.tenants[event.tenant_id]
                if tb.suppressed is not None and _add_forgotten(tb, event, event.received_at.timestamp()):
                    forgotten.add(i)
    views = {t: (tb.cells, tb.visitors, tb.pages, tb.segments) for t, tb in batch.tenants.items()}
    scan.fold(views, first, _PAGE_VIEW, _slotted_rules(rules, wanted), forgotten)


def _wanted_keys(rules: list[SegmentRule] | tuple[SegmentRule, ...]) -> tuple[str, ...]:
    """The properties the fold reads: the page path (first, as the scanner's fold expects) and every key
    a rule's ``where`` names."""
    return tuple(dict.fromkeys(["path", *(k for rule in rules for k in rule.where)]))


def _slotted_rules(rules: list[SegmentRule] | tuple[SegmentRule, ...], wanted: tuple[str, ...]
                   ) -> tuple[tuple[tuple[int, tuple[tuple[int, Any], ...]], ...], ...]:
    """Rules per event type (in ``_ETYPE_VALUES`` order) as (index, ((slot in ``wanted``, value), ...))."""
    by_type = _compile(rules)
    return tuple(tuple((r, tuple((wanted.index(k), v) for k, v in where)) for r, where in by_type.get(value, ()))
                 for value in _ETYPE_VALUES)


def _event_ids(events: list[Event]) -> list[bytes]:
    """Each event's ``event_id`` as its 16 bytes (``UUID.bytes``)."""
    return [e.event_id.int.to_bytes(16, "big") for e in events]


def _by_tenant(events: list[Event], records: list[StreamRecord], ids: list[bytes]
               ) -> tuple[list[float], dict[str, tuple[list[StreamRecord], list[bytes], list[float]]]]:
    """Each event's ``received_at`` in epoch seconds, and the records, ids and those stamps per tenant
    (each in the batch's order; tenants in order of first appearance)."""
    stamps = [e.received_at.timestamp() for e in events]
    groups: dict[str, tuple[list[StreamRecord], list[bytes], list[float]]] = {}
    for event, record, eid, ts in zip(events, records, ids, stamps):
        group = groups.get(event.tenant_id)
        if group is None:
            group = groups[event.tenant_id] = ([], [], [])
        group[0].append(record)
        group[1].append(eid)
        group[2].append(ts)
    return stamps, groups


def _first_sightings(ids: list[bytes], recent: RecentIds | None, now: float) -> list[int] | None:
    """Positions of the events to keep: the first of each ``event_id`` in the batch, unless this processor
    applied it a moment ago (``recent``); None when that is every event (the common case, found with two
    set operations in C instead of a look-up per event)."""
    unique = dict.fromkeys(ids)
    repeats: set[bytes] = set()
    if recent is not None and recent.applied_at:
        repeats = {eid for eid in recent.applied_at.keys() & unique.keys() if recent.is_repeat(eid, now)}
    if len(unique) == len(ids) and not repeats:
        return None
    seen = repeats  # a recent repeat is dropped wherever it appears; any other id after its first time
    keep: list[int] = []
    for i, eid in enumerate(ids):
        if eid not in seen:
            seen.add(eid)
            keep.append(i)
    return keep
