"""Seeded, reproducible product traffic, and the ground-truth ledger every correctness test compares to.

Tenants follow a Zipf curve; each visitor walks a funnel (landing page, /pricing, a click on the
pricing CTA, a signup form, an identify that links ``anonymous_id`` to ``user_id``), then browses. A
steady rate with optional spikes; knobs for exact-copy duplicates (producer retries), late events
(received at ``t``, reaching the stream minutes later), malformed records of every rejection reason, and
events lost upstream (a ``source_seq`` that never reaches the stream).

Every record is numbered as a collector numbers it: ``source_seq`` counts per (``source_id``, tenant),
and malformed records come from the same collectors and take the next number of that sequence whenever
their numbers stay readable (:func:`streaming.events.sequence_position`), as a real collector's rejected
records would: a dead letter holds its number, so rejected records must not look like upstream loss.

The ledger is computed from the same draws as the records, so it is exact: counts per tenant × event
type × minute of valid de-duplicated events, unique visitors per tenant × hour and day, dead letters per
reason, duplicates, late events and the upstream gaps per source.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import gzip
import heapq
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from streaming.events import DEFAULT_MAX_EVENT_BYTES, REASONS, Reason, encode_rejected, sequence_position

PAGES = ("/", "/pricing", "/docs", "/features", "/blog/launch", "/blog/scaling", "/signup", "/about")
CUSTOM_NAMES = ("video_played", "file_downloaded", "search", "share")
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Spike:
    """``factor`` times the base rate for ``length_s`` seconds starting ``at_s`` seconds in."""

    at_s: int
    length_s: int
    factor: float

    @classmethod
    def parse(cls, text: str) -> Spike:
        """``AT:LENGTH:FACTOR`` in seconds, e.g. ``120:10:10``."""
        at, length, factor = text.split(":")
        return cls(int(at), int(length), float(factor))


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 42
    tenants: int = 50
    zipf_s: float = 1.1
    start: str = "2026-01-01T00:00:00Z"
    duration_s: int = 300
    rate_per_s: float = 100.0
    spikes: tuple[Spike, ...] = ()
    sources: int = 8
    new_visitor_p: float = 0.25
    duplicate_rate: float = 0.0
    late_rate: float = 0.0
    late_delay_s: tuple[int, int] = (30, 600)
    malformed_rate: float = 0.0
    malformed_reasons: tuple[str, ...] = REASONS
    upstream_loss_rate: float = 0.0
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "late_rate", "malformed_rate", "upstream_loss_rate", "new_visitor_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must be between 0 and 1")
        unknown = set(self.malformed_reasons) - set(REASONS)
        if unknown:
            raise ValueError(f"unknown malformed reasons {sorted(unknown)}; known: {', '.join(REASONS)}")
        if self.tenants < 1 or self.duration_s < 1 or self.rate_per_s <= 0:
            raise ValueError("tenants, duration_s and rate_per_s must be positive")

    @property
    def start_ms(self) -> int:
        parsed = dt.datetime.fromisoformat(self.start.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class GeneratedRecord:
    """One record as it reaches the stream: partition key, bytes, and when (ms since start) it is sent."""

    partition_key: str
    data: bytes
    emit_ms: int
    kind: str  # "valid" | "duplicate" | "late" | "malformed"
    reason: str | None = None


@dataclass
class Ledger:
    """Exact expectations for a generated run. Saved as JSON next to the records."""

    config: dict[str, Any]
    records_total: int = 0
    valid_events: int = 0
    duplicates: int = 0
    late_events: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    uniques_hour: dict[str, dict[str, int]] = field(default_factory=dict)
    uniques_day: dict[str, dict[str, int]] = field(default_factory=dict)
    #: source_id -> tenant_id -> the last source_seq it handed out (valid, lost or readable malformed).
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    upstream_lost: list[dict[str, Any]] = field(default_factory=list)

    def count_rows(self) -> list[tuple[str, str, str, int]]:
        """(tenant, event_type, minute ISO, count), sorted."""
        return sorted(
            (tenant, etype, minute, n)
            for tenant, by_type in self.counts.items()
            for etype, by_minute in by_type.items()
            for minute, n in by_minute.items()
        )

    def totals_by_tenant_type(self) -> dict[tuple[str, str], int]:
        return {
            (tenant, etype): sum(by_minute.values())
            for tenant, by_type in self.counts.items()
            for etype, by_minute in by_type.items()
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> Ledger:
        return cls(**json.loads(path.read_text()))


def _iso_ms(epoch_ms: int, _cache: dict[int, str] = {}) -> str:  # noqa: B006 - a deliberate memo
    second, ms = divmod(epoch_ms, 1000)
    prefix = _cache.get(second)
    if prefix is None:
        if len(_cache) > 4096:
            _cache.clear()
        prefix = dt.datetime.fromtimestamp(second, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _cache[second] = prefix
    return f"{prefix}.{ms:03d}Z"


def _minute_iso(epoch_ms: int) -> str:
    return _iso_ms(epoch_ms - epoch_ms % 60_000)[:16] + ":00Z"


@dataclass
class _Visitor:
    anonymous_id: str
    source_id: str
    step: int = 0
    user_id: str | None = None


class TrafficGenerator:
    """Iterate :meth:`records` once; :attr:`ledger` is complete when the iterator is exhausted."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.tenant_ids = [f"tenant-{i:03d}" for i in range(1, config.tenants + 1)]
        weights = [1.0 / (rank ** config.zipf_s) for rank in range(1, config.tenants + 1)]
        total = sum(weights)
        acc = 0.0
        self._cum: list[float] = []
        for w in weights:
            acc += w / total
            self._cum.append(acc)
        self._visitors: dict[str, list[_Visitor]] = {t: [] for t in self.tenant_ids}
        self._source_ids = [f"collector-{i:02d}" for i in range(config.sources)]
        #: The last number each (source_id, tenant_id) handed out: numbering is per collector and tenant.
        self._seq: dict[tuple[str, str], int] = defaultdict(int)
        self._seen_hour: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self._seen_day: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        # JSON-normalised (tuples become lists) so a saved and reloaded ledger compares equal.
        self.ledger = Ledger(config=json.loads(json.dumps(asdict(config))))
        self._counter = 0

    # -- draws ---------------------------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _tenant(self) -> str:
        i = bisect.bisect_left(self._cum, self.rng.random())
        return self.tenant_ids[min(i, len(self.tenant_ids) - 1)]

    def _visitor(self, tenant: str) -> _Visitor:
        pool = self._visitors[tenant]
        if not pool or self.rng.random() < self.config.new_visitor_p:
            self._counter += 1
            anon = f"anon-{self.rng.getrandbits(48):012x}"
            visitor = _Visitor(anon, self._source_ids[self.rng.randrange(len(self._source_ids))])
            pool.append(visitor)
            if len(pool) > 200:
                pool.pop(0)
            return visitor
        return pool[self.rng.randrange(len(pool))]

    def _next_event(self, visitor: _Visitor) -> tuple[str, dict[str, Any]]:
        """The visitor's next funnel step: (event_type, properties)."""
        rng = self.rng
        step = visitor.step
        if step == 0:
            visitor.step = 1
            return "page_view", {"path": "/", "referrer": rng.choice(("google", "direct", "newsletter"))}
        if step == 1:
            visitor.step = 2 if rng.random() < 0.6 else 1
            return "page_view", {"path": "/pricing" if visitor.step == 2 else rng.choice(PAGES)}
        if step == 2:
            visitor.step = 3 if rng.random() < 0.5 else 2
            if visitor.step == 3:
                return "click", {"path": "/pricing", "element": "cta-start-trial"}
            return "page_view", {"path": "/pricing"}
        if step == 3:
            visitor.step = 4 if rng.random() < 0.5 else 3
            return "form_submit", {"path": "/signup", "form": "trial"}
        if step == 4:
            visitor.step = 5
            visitor.user_id = f"user-{rng.getrandbits(40):010x}"
            return "identify", {"traits": {"plan": rng.choice(("trial", "team", "enterprise"))}}
        roll = rng.random()
        if roll < 0.6:
            return "page_view", {"path": rng.choice(PAGES)}
        if roll < 0.85:
            return "click", {"path": rng.choice(PAGES), "element": rng.choice(("nav", "cta", "footer"))}
        return "custom", {"name": rng.choice(CUSTOM_NAMES)}

    def _rate_at(self, second: int) -> float:
        rate = self.config.rate_per_s
        for spike in self.config.spikes:
            if spike.at_s <= second < spike.at_s + spike.length_s:
                rate *= spike.factor
        return rate

    # -- output --------------------------------------------------------------------------------
    def _record_valid(self, tenant: str, visitor: _Visitor, etype: str, props: dict[str, Any], t_ms: int) -> dict[str, Any]:
        key = (visitor.source_id, tenant)
        self._seq[key] += 1
        occurred_ms = t_ms - self.rng.randrange(0, 2000)
        return {
            "event_id": self._uuid(),
            "tenant_id": tenant,
            "event_type": etype,
            "anonymous_id": visitor.anonymous_id,
            "user_id": visitor.user_id,
            "occurred_at": _iso_ms(occurred_ms),
            "received_at": _iso_ms(t_ms),
            "source_id": visitor.source_id,
            "source_seq": self._seq[key],
            "properties": props,
            "schema_version": 1,
        }

    def _count(self, doc: dict[str, Any], t_ms: int) -> None:
        ledger = self.ledger
        tenant, etype = doc["tenant_id"], doc["event_type"]
        by_minute = ledger.counts.setdefault(tenant, {}).setdefault(etype, {})
        minute = _minute_iso(t_ms)
        by_minute[minute] = by_minute.get(minute, 0) + 1
        ledger.valid_events += 1
        hour = _iso_ms(t_ms - t_ms % 3_600_000)[:13] + ":00:00Z"
        day = _iso_ms(t_ms - t_ms % 86_400_000)[:10]
        self._seen_hour[tenant][hour].add(doc["anonymous_id"])
        self._seen_day[tenant][day].add(doc["anonymous_id"])

    def _malformed(self, reason: str, t_ms: int) -> bytes:
        """A record broken for ``reason``, from one of the collectors. It takes the next number of its
        (source, tenant) sequence only if that number can still be read from its bytes."""
        rng = self.rng
        tenant = self._tenant()
        source = self._source_ids[rng.randrange(len(self._source_ids))]
        if reason == Reason.BAD_TENANT_ID:
            tenant = rng.choice(("Acme Corp", "t{1}", "x:y", "'; drop table events; --"))
        key = (source, tenant)
        base = {
            "event_id": self._uuid(), "tenant_id": tenant, "event_type": "page_view",
            "anonymous_id": f"anon-bad-{rng.getrandbits(32):08x}", "user_id": None,
            "occurred_at": _iso_ms(t_ms), "received_at": _iso_ms(t_ms), "source_id": source,
            "source_seq": self._seq[key] + 1, "properties": {"path": "/"}, "schema_version": 1,
        }
        data = self._break(base, reason)
        if sequence_position(data) == (source, tenant, self._seq[key] + 1):
            self._seq[key] += 1
        return data

    def _break(self, base: dict[str, Any], reason: str) -> bytes:
        rng = self.rng
        if reason == Reason.NOT_UTF8:
            return _json.encode(base).replace(b'"/"', b'"/\xff\xfe"', 1)
        if reason == Reason.UNKNOWN_MESSAGE_TYPE:  # what the collector writes for a message it refused
            return encode_rejected(Reason.UNKNOWN_MESSAGE_TYPE, "type 'purchase' is not a Segment message type",
                                   b'{"type":"purchase","anonymousId":"' + base["anonymous_id"].encode() + b'"}',
                                   base["tenant_id"], base["source_id"], base["source_seq"], base["received_at"])
        if reason == Reason.INVALID_JSON:
            data = _json.encode(base)
            return data[: rng.randrange(5, len(data) - 5)]
        if reason == Reason.MISSING_FIELD:
            del base[rng.choice(("event_id", "tenant_id", "event_type", "received_at", "source_seq"))]
        elif reason == Reason.WRONG_TYPE:
            base["source_seq"] = str(base["source_seq"])
        elif reason == Reason.INVALID_VALUE:
            base["event_id"] = "not-a-uuid"
        elif reason == Reason.UNKNOWN_EVENT_TYPE:
            base["event_type"] = "purchase_completed"
        elif reason == Reason.OVERSIZED:
            base["properties"] = {"blob": "x" * (self.config.max_event_bytes + 10)}
        elif reason == Reason.FUTURE_RECEIVED_AT:
            base["received_at"] = "2099-01-01T00:00:00.000Z"
        elif reason == Reason.UNSUPPORTED_SCHEMA_VERSION:
            base["schema_version"] = 2
        return _json.encode(base)

    def records(self) -> Iterator[GeneratedRecord]:
        """All records in the order they reach the stream (late ones after their time)."""
        cfg = self.config
        rng = self.rng
        start_ms = cfg.start_ms
        delayed: list[tuple[int, int, GeneratedRecord]] = []  # heap of (emit_ms, tiebreak, record)
        tiebreak = 0
        carry = 0.0
        ledger = self.ledger
        for second in range(cfg.duration_s):
            carry += self._rate_at(second)
            n = int(carry)
            carry -= n
            offsets = sorted(rng.randrange(1000) for _ in range(n))
            for offset in offsets:
                emit_ms = second * 1000 + offset
                while delayed and delayed[0][0] <= emit_ms:
                    ledger.records_total += 1
                    yield heapq.heappop(delayed)[2]
                t_ms = start_ms + emit_ms
                if cfg.malformed_rate and rng.random() < cfg.malformed_rate:
                    reason = cfg.malformed_reasons[rng.randrange(len(cfg.malformed_reasons))]
                    ledger.dead_letters[reason] = ledger.dead_letters.get(reason, 0) + 1
                    ledger.records_total += 1
                    yield GeneratedRecord(f"bad-{rng.getrandbits(32):08x}", self._malformed(reason, t_ms), emit_ms,
                                          "malformed", reason)
                    continue
                tenant = self._tenant()
                visitor = self._visitor(tenant)
                etype, props = self._next_event(visitor)
                doc = self._record_valid(tenant, visitor, etype, props, t_ms)
                if cfg.upstream_loss_rate and rng.random() < cfg.upstream_loss_rate:
                    ledger.upstream_lost.append({
                        "source_id": doc["source_id"], "source_seq": doc["source_seq"], "tenant_id": tenant,
                        "event_type": etype, "minute": _minute_iso(t_ms), "event_id": doc["event_id"],
                    })
                    continue
                self._count(doc, t_ms)
                data = _json.encode(doc)
                key = visitor.anonymous_id
                if cfg.late_rate and rng.random() < cfg.late_rate:
                    ledger.late_events += 1
                    lo, hi = cfg.late_delay_s
                    delay = rng.randrange(lo * 1000, hi * 1000 + 1)
                    tiebreak += 1
                    heapq.heappush(delayed, (emit_ms + delay, tiebreak, GeneratedRecord(key, data, emit_ms + delay, "late")))
                else:
                    ledger.records_total += 1
                    yield GeneratedRecord(key, data, emit_ms, "valid")
                if cfg.duplicate_rate and rng.random() < cfg.duplicate_rate:
                    ledger.duplicates += 1
                    dup_at = emit_ms + rng.randrange(0, 5000)
                    tiebreak += 1
                    heapq.heappush(delayed, (dup_at, tiebreak, GeneratedRecord(key, data, dup_at, "duplicate")))
        while delayed:
            ledger.records_total += 1
            yield heapq.heappop(delayed)[2]
        self._finish()

    def _finish(self) -> None:
        ledger = self.ledger
        ledger.uniques_hour = {t: {h: len(v) for h, v in sorted(hours.items())} for t, hours in sorted(self._seen_hour.items())}
        ledger.uniques_day = {t: {d: len(v) for d, v in sorted(days.items())} for t, days in sorted(self._seen_day.items())}
        sources: dict[str, dict[str, int]] = {}
        for (source, tenant), last in sorted(self._seq.items()):
            if last:
                sources.setdefault(source, {})[tenant] = last
        ledger.sources = sources
        ledger.dead_letters = dict(sorted(ledger.dead_letters.items()))


def write_run(config: GeneratorConfig, out_dir: Path) -> Ledger:
    """Write ``records.jsonl.gz`` (one JSON line per record, data base64) and ``ledger.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = TrafficGenerator(config)
    with gzip.open(out_dir / "records.jsonl.gz", "wt", compresslevel=3) as fh:
        for record in generator.records():
            fh.write(json.dumps({
                "k": record.partition_key, "d": base64.b64encode(record.data).decode(), "t": record.emit_ms,
                "kind": record.kind, "reason": record.reason,
            }) + "\n")
    generator.ledger.save(out_dir / "ledger.json")
    return generator.ledger


def read_run(out_dir: Path) -> Iterator[GeneratedRecord]:
    """Records written by :func:`write_run`, in stream order."""
    with gzip.open(out_dir / "records.jsonl.gz", "rt") as fh:
        for line in fh:
            row = json.loads(line)
            yield GeneratedRecord(row["k"], base64.b64decode(row["d"]), row["t"], row["kind"], row["reason"])
