"""The Python query API over the speed layer's Redis keys (the CLI and the HTTP app call these).

Ranges are [start, end) in UTC. Counts read minute hashes for ranges up to ``MAX_MINUTE_KEYS`` minutes
and hour/day roll-ups beyond, always choosing the coarsest keys that tile the range exactly. Every key
is built from a validated tenant id (:func:`streaming.speed.keys.check_tenant`).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from streaming.events import EVENT_TYPES
from streaming.speed import keys
from streaming.speed.ops import percentile, read_lag, read_latency

UTC = dt.timezone.utc
MAX_RANGE_DAYS = 366


class QueryError(ValueError):
    """A query the caller can fix (bad range, unknown segment)."""


def _epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _check_range(start: dt.datetime, end: dt.datetime) -> tuple[int, int]:
    s, e = _epoch(start), _epoch(end)
    if e <= s:
        raise QueryError("end must be after start")
    if e - s > MAX_RANGE_DAYS * 86_400:
        raise QueryError(f"range longer than {MAX_RANGE_DAYS} days")
    return s, e


def _tiles(s: int, e: int) -> list[tuple[str, int]]:
    """Cover [s, e) (seconds, minute-aligned) with the fewest day/hour/minute buckets."""
    s_min, e_min = s // 60, (e + 59) // 60
    out: list[tuple[str, int]] = []
    m = s_min
    while m < e_min:
        if m % 1440 == 0 and m + 1440 <= e_min:
            out.append(("d", m // 1440))
            m += 1440
        elif m % 60 == 0 and m + 60 <= e_min:
            out.append(("h", m // 60))
            m += 60
        else:
            out.append(("m", m))
            m += 1
    return out


@dataclass(frozen=True)
class Counts:
    tenant: str
    start: dt.datetime
    end: dt.datetime
    by_event_type: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_event_type.values())

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "by_event_type": self.by_event_type, "total": self.total}


class SpeedQueries:
    """Queries for one Redis (single node or cluster)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def counts(self, tenant: str, start: dt.datetime, end: dt.datetime, event_type: str | None = None) -> Counts:
        """Events per type in [start, end) (minute resolution: a partial minute counts whole)."""
        keys.check_tenant(tenant)
        if event_type is not None and event_type not in EVENT_TYPES:
            raise QueryError(f"event_type must be one of {', '.join(EVENT_TYPES)}")
        s, e = _check_range(start, end)
        pipe = self.client.pipeline(transaction=False)
        for resolution, bucket in _tiles(s, e):
            pipe.hgetall(keys.counts(tenant, resolution, bucket))
        totals = {t: 0 for t in EVENT_TYPES}
        for h in pipe.execute():
            for etype, n in h.items():
                totals[etype.decode()] = totals.get(etype.decode(), 0) + int(n)
        if event_type is not None:
            totals = {event_type: totals[event_type]}
        return Counts(tenant, start, end, totals)

    def series(self, tenant: str, start: dt.datetime, end: dt.datetime, resolution: str = "m") -> list[dict[str, Any]]:
        """One row per minute|hour|day bucket in [start, end): {bucket_start, by_event_type}."""
        keys.check_tenant(tenant)
        size = {"m": 60, "h": 3600, "d": 86_400}.get(resolution)
        if size is None:
            raise QueryError("resolution must be m, h or d")
        s, e = _check_range(start, end)
        buckets = list(range(s // size, (e + size - 1) // size))
        if len(buckets) > 10_000:
            raise QueryError("too many buckets: use a coarser resolution")
        pipe = self.client.pipeline(transaction=False)
        for b in buckets:
            pipe.hgetall(keys.counts(tenant, resolution, b))
        rows = []
        for b, h in zip(buckets, pipe.execute(), strict=True):
            rows.append({"bucket_start": dt.datetime.fromtimestamp(b * size, UTC).isoformat(),
                         "by_event_type": {k.decode(): int(v) for k, v in h.items()}})
        return rows

    def uniques(self, tenant: str, start: dt.datetime, end: dt.datetime) -> int:
        """Distinct anonymous_ids in [start, end) at hour resolution (HyperLogLog, ~0.8% error)."""
        keys.check_tenant(tenant)
        s, e = _check_range(start, end)
        h0, h1 = s // 3600, (e + 3599) // 3600
        if h1 - h0 > 24 * 92:
            raise QueryError("unique visitors are kept per hour: ask for at most 92 days")
        ks = [keys.uniques(tenant, "h", h) for h in range(h0, h1)]
        # PFCOUNT over several keys merges them on the server; all share the tenant's slot.
        return int(self.client.pfcount(*ks))

    def top_pages(self, tenant: str, start: dt.datetime, end: dt.datetime, limit: int = 10) -> list[tuple[str, int]]:
        """The most viewed paths in [start, end) at hour resolution."""
        keys.check_tenant(tenant)
        s, e = _check_range(start, end)
        h0, h1 = s // 3600, (e + 3599) // 3600
        pipe = self.client.pipeline(transaction=False)
        h = h0
        while h < h1:
            if h % 24 == 0 and h + 24 <= h1:
                pipe.zrange(keys.top_pages(tenant, "d", h // 24), 0, -1, withscores=True)
                h += 24
            else:
                pipe.zrange(keys.top_pages(tenant, "h", h), 0, -1, withscores=True)
                h += 1
        totals: dict[str, int] = {}
        for rows in pipe.execute():
            for path, score in rows:
                totals[path.decode()] = totals.get(path.decode(), 0) + int(score)
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, limit)]

    def segment_members(self, tenant: str, segment: str, at: dt.datetime | None = None, limit: int = 1000) -> list[str]:
        """Visitors who are members of ``segment`` at time ``at`` (default now), live from the stream."""
        from streaming.segments import load_rules

        keys.check_tenant(tenant)
        if segment not in {r.name for r in load_rules()}:
            raise QueryError(f"unknown segment {segment!r}")
        at_ms = int((_epoch(at) if at is not None else time.time()) * 1000)
        members = self.client.zrangebyscore(keys.segment_members(tenant, segment), f"({at_ms}", "+inf",
                                            start=0, num=max(1, limit))
        return sorted(m.decode() for m in members)

    def segment_sizes(self, tenant: str, at: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Every segment rule with its live member count at ``at`` (default now)."""
        from streaming.segments import load_rules

        keys.check_tenant(tenant)
        at_ms = int((_epoch(at) if at is not None else time.time()) * 1000)
        rules = load_rules()
        pipe = self.client.pipeline(transaction=False)
        for rule in rules:
            pipe.zcount(keys.segment_members(tenant, rule.name), f"({at_ms}", "+inf")
        return [{"name": r.name, "description": r.description, "members": int(n)} for r, n in zip(rules, pipe.execute(), strict=True)]

    def consumer_lag(self) -> dict[str, dict[str, Any]]:
        """Per consumer group and shard: MillisBehindLatest at the last batch, and when that was."""
        return read_lag(self.client)

    def latency(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        """Event-to-counter latency (received_at to committed) over [start, end): p50, p99, count."""
        s, e = _check_range(start, end)
        histogram = read_latency(self.client, s // 60, (e - 1) // 60)
        return {"events": sum(histogram.values()), "p50_s": percentile(histogram, 0.50),
                "p99_s": percentile(histogram, 0.99), "histogram_ms": {str(k): v for k, v in sorted(histogram.items())}}
