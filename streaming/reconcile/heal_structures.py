"""Healing the speed layer's other structures from the warehouse: unique visitors, top pages, segments.

Counters are healed cell by cell from reconciliation's verdicts (:mod:`streaming.reconcile.heal`). The
other structures have no verdicts of their own, so they are compared here, in the same bounds: only
windows that are **closed** (their end at or before ``Result.closed_before``) and inside the healed range,
and never a tenant × hour whose batch truth reconciliation found incomplete (an archive or warehouse
finding, or a pending cell). What Redis lost past the stream's retention comes back from
``marts.fct_events``, read through the reconciliation's warehouse reader (DuckDB or Snowflake, the same
methods), and every write is one that a consumer writing at the same time cannot be hurt by:

* **Unique visitors** (hourly HyperLogLogs; days and longer ranges are unions of hours, as the query API
  reads them): where an hour's estimate differs from the warehouse's exact count, the hour's anonymous ids
  are PFADDed. A union never removes an id the consumer added nor counts one twice, so the result is the
  HyperLogLog of the true set (within its ~0.8% error); an HLL cannot lose an id, so one with *more* than
  the warehouse is left alone (a documented limit).
* **Top pages** (hour and day sorted sets): compare-and-set per hour × path, as counters are healed; the
  day moves by the hour's difference.
* **Live segments** (:func:`~streaming.speed.keys.segment_members`: visitor -> membership-until, and
  the state of a rule needing more than one hit): from the warehouse's hits of the rule in the last
  window (only they make a membership live now) merged with what Redis holds outside the healed span,
  the same newest-``min_count``-in-window rule as ``apply.lua``; a membership score only rises
  (``ZADD GT``) and a state is written only if the state healing read is still the one there
  (compare-and-set).

Each heal returns :class:`HealedItem` rows (no visitor ids: a segment row counts memberships), recorded
with the counter cells by :func:`streaming.reconcile.heal.heal`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgspec
import pandas as pd

from streaming.segments import SegmentRule
from streaming.speed import keys, scripts
from streaming.speed.store import Retention

TOP_PAGES_LUA = scripts.source("heal_top_pages")
#: Arguments per script call (Lua's unpack limit is ~8,000).
CHUNK = 1_000
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(list[int]).decode


@dataclass(frozen=True)
class HealedItem:
    kind: str  # uniques | top_pages | segment
    tenant_id: str
    bucket: str  # "hour <epoch hour>", "hour <epoch hour> <path>", or the segment's name
    old: int
    new: int
    status: str  # healed | skipped (moved since it was read) | planned (dry run)


@dataclass(frozen=True)
class Scope:
    """What may be healed: the range [start_minute, end_minute), windows ending by ``closed_before``
    (epoch seconds), never the tenant × hours and tenant × minutes whose batch truth is incomplete or
    pending (``blocked_hours``, ``blocked_minutes``)."""

    start_minute: int
    end_minute: int
    closed_before: float
    blocked_hours: frozenset[tuple[str, int]]
    blocked_minutes: frozenset[tuple[str, int]]
    now_ms: int

    def hours(self) -> tuple[int, int]:
        """[first, end) of the epoch hours wholly inside the range and closed."""
        first = -(-self.start_minute // 60)
        end = min(self.end_minute // 60, int(self.closed_before // 3600)) if self.closed_before != float("-inf") else first
        return first, max(first, end)

    def span_ms(self, window_ms: int) -> tuple[int, int]:
        """[lo, hi) of the hits that can make a membership live now, inside the range and closed."""
        closed_minutes = int(self.closed_before // 60) if self.closed_before != float("-inf") else self.start_minute
        hi = min(self.end_minute, closed_minutes) * 60_000  # a minute is closed when it ends by closed_before
        return max(self.start_minute * 60_000, self.now_ms - window_ms), hi

    @cached_property
    def _minute_hours(self) -> frozenset[tuple[str, int]]:
        return frozenset((t, m // 60) for t, m in self.blocked_minutes)

    def clean_hour(self, tenant: str, hour: int) -> bool:
        return (tenant, hour) not in self.blocked_hours and (tenant, hour) not in self._minute_hours

    def clean_span(self, tenant: str, lo_ms: int, hi_ms: int) -> bool:
        """No blocked minute of the tenant in [lo_ms, hi_ms), and no hour there judged incomplete."""
        lo, hi = lo_ms // 60_000, -(-hi_ms // 60_000)  # the minutes [lo_ms, hi_ms) touches
        return not any(t == tenant and lo <= m < hi for t, m in self.blocked_minutes) and not any(
            t == tenant and lo // 60 <= h <= (hi - 1) // 60 for t, h in self.blocked_hours)


def heal_uniques(client: Any, warehouse: Any, scope: Scope, retention: Retention, dry_run: bool) -> list[HealedItem]:
    first, end = scope.hours()
    exact = warehouse.visitor_counts(first, end) if end > first else pd.DataFrame(columns=["tenant_id", "hour", "visitors"])
    rows = [(str(r.tenant_id), int(r.hour), int(r.visitors)) for r in exact.itertuples(index=False)
            if scope.clean_hour(str(r.tenant_id), int(r.hour))]
    pipe = client.pipeline(transaction=False)
    for tenant, hour, _ in rows:
        pipe.pfcount(keys.uniques(tenant, "h", hour))
    estimates = pipe.execute() if rows else []
    script = scripts.register(client, "heal_uniques")
    out = []
    for (tenant, hour, n), before in zip(rows, estimates, strict=True):
        if int(before) == n:
            continue
        if dry_run:
            out.append(HealedItem("uniques", tenant, f"hour {hour}", int(before), n, "planned"))
            continue
        ids = warehouse.visitor_ids(tenant, hour)
        changed, after = 0, int(before)
        for i in range(0, len(ids), CHUNK):
            changed_i, after = script(keys=[keys.uniques(tenant, "h", hour)], args=[retention.day_s, *ids[i:i + CHUNK]])
            changed |= int(changed_i)
        if changed:
            out.append(HealedItem("uniques", tenant, f"hour {hour}", int(before), int(after), "healed"))
    return out


def heal_top_pages(client: Any, warehouse: Any, scope: Scope, tenants: set[str], retention: Retention,
                   dry_run: bool) -> list[HealedItem]:
    first, end = scope.hours()
    if end <= first:
        return []
    want: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    for r in warehouse.page_views(first, end).itertuples(index=False):
        want[(str(r.tenant_id), int(r.hour))][str(r.path)] = int(r.views)
    todo = sorted({(t, h) for t in tenants | {t for t, _ in want} for h in range(first, end)
                   if scope.clean_hour(t, h)})
    pipe = client.pipeline(transaction=False)
    for tenant, hour in todo:
        pipe.zrange(keys.top_pages(tenant, "h", hour), 0, -1, withscores=True)
    script = scripts.register(client, "heal_top_pages")
    out = []
    for (tenant, hour), got_rows in zip(todo, pipe.execute() if todo else [], strict=True):
        got = {p.decode(): int(n) for p, n in got_rows}
        truth = want.get((tenant, hour), {})
        diffs = [(path, got.get(path, 0), truth.get(path, 0)) for path in sorted(set(got) | set(truth))
                 if got.get(path, 0) != truth.get(path, 0)]
        for i in range(0, len(diffs), CHUNK):
            part = diffs[i:i + CHUNK]
            if dry_run:
                out.extend(HealedItem("top_pages", tenant, f"hour {hour} {p}", old, new, "planned") for p, old, new in part)
                continue
            replies = script(keys=[keys.top_pages(tenant, "h", hour), keys.top_pages(tenant, "d", hour // 24)],
                             args=[retention.hour_s, retention.day_s, *(x for d in part for x in d)])
            for (path, _, new), (status, old) in zip(part, replies, strict=True):
                out.append(HealedItem("top_pages", tenant, f"hour {hour} {path}", int(old), new, _text(status)))
    return out


def merged_segment(stored: list[int], hits: list[int], lo: int, hi: int, k: int, window: int) -> tuple[int, list[int]]:
    """(membership-until, state) of one visitor: the warehouse's hits on [lo, hi) (complete there) with the
    stored state's hits outside it, by ``apply.lua``'s rule: a hit makes the visitor a member until the
    oldest of its newest ``k`` hits inside the window ending at it, plus the window; the state is the newest
    ``k`` hits inside the window of the newest. (0, []) when there are no hits."""
    merged = sorted([t for t in stored if t < lo or t >= hi] + hits)
    if not merged:
        return 0, []
    score = 0
    for i, t in enumerate(merged):
        group = [x for x in merged[max(0, i - k + 1):i + 1] if x > t - window]
        if len(group) == k:
            score = max(score, group[0] + window)
    return score, [x for x in merged[-k:] if x > merged[-1] - window]


def heal_segments(client: Any, warehouse: Any, scope: Scope, rules: list[SegmentRule], retention: Retention,
                  dry_run: bool) -> list[HealedItem]:
    out = []
    for rule in rules:
        window, k = rule.window_hours * 3_600_000, rule.min_count
        lo, hi = scope.span_ms(window)
        if hi <= lo:
            continue
        hits: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for r in warehouse.segment_hits(rule.event_type, rule.where, lo, hi).itertuples(index=False):
            hits[str(r.tenant_id)][str(r.anonymous_id)].append(int(r.received_ms))
        for tenant, by_anon in sorted(hits.items()):
            if not scope.clean_span(tenant, lo, hi):
                continue
            item = _heal_rule(client, tenant, rule.name, k, window, lo, hi, by_anon, retention, dry_run, scope.now_ms)
            if item is not None:
                out.append(item)
    return out


def _heal_rule(client: Any, tenant: str, name: str, k: int, window: int, lo: int, hi: int,
               by_anon: dict[str, list[int]], retention: Retention, dry_run: bool, now_ms: int) -> HealedItem | None:
    anons = sorted(by_anon)
    seg = keys.segment_members(tenant, name)
    pipe = client.pipeline(transaction=False)
    for anon in anons:
        pipe.zscore(seg, anon)
        if k > 1:
            base = max(by_anon[anon]) // window
            for b in (base + 1, base, base - 1):
                pipe.hget(keys.segment_state(tenant, name, b), anon)
    replies = pipe.execute()
    step = 1 + (3 if k > 1 else 0)
    args: list[Any] = []
    for i, anon in enumerate(anons):
        score_now, found = replies[i * step], replies[i * step + 1:(i + 1) * step]
        base = max(by_anon[anon]) // window
        expected, stored = "", []
        for b, value in zip((base + 1, base, base - 1), found, strict=False):
            if value is not None:
                expected, stored = f"{b}:".encode() + value, _unpack(value)
                break
        score, state = merged_segment(stored, sorted(by_anon[anon]), lo, hi, k, window)
        raise_score = score if score > (float(score_now) if score_now is not None else 0) else 0
        write_state = k > 1 and bool(state) and state != stored
        if raise_score or write_state:
            args += [anon, raise_score, base, expected, state[-1] // window if state else 0,
                     _pack(state) if write_state else ""]
    if not args:
        return None
    live_before = int(client.zcount(seg, f"({now_ms}", "+inf"))
    if dry_run:
        return HealedItem("segment", tenant, name, live_before, len(args) // 6, "planned")
    script = scripts.register(client, "heal_segments")
    raised = written = skipped = 0
    for i in range(0, len(args), 6 * CHUNK):
        r, w, s = script(keys=[seg], args=[keys.tenant_prefix(tenant), name, retention.day_s,
                                           2 * window // 1000 + 60, *args[i:i + 6 * CHUNK]])
        raised, written, skipped = raised + int(r), written + int(w), skipped + int(s)
    live_after = int(client.zcount(seg, f"({now_ms}", "+inf"))
    return HealedItem("segment", tenant, name, live_before, live_after,
                      "skipped" if skipped and not (raised or written) else "healed")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
