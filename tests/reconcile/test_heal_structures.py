"""Healing unique visitors, top pages and segments from a real DuckDB ``marts.fct_events`` into a real
redis-server: only closed, clean hours; unions and compare-and-sets that a consumer writing at the same
time cannot be hurt by. The whole path (Redis emptied mid-run, the stream trimmed, one ``tally heal``) is
``test_heal_after_empty_redis.py``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import msgspec
import pytest
import redis

from streaming.reconcile.heal_structures import (
    TOP_PAGES_LUA, Scope, heal_segments, heal_top_pages, heal_uniques, merged_segment,
)
from streaming.warehouse.duckdb import DuckDBWarehouse
from streaming.segments import SegmentRule
from streaming.speed import keys
from streaming.speed.store import Retention

H = 29_500_000 // 60  # an epoch hour
HOUR_MS = 3_600_000
T = "t-heal"
RULE = SegmentRule("fans", "3 views of /x in 24 h", "page_view", 3, 24, {"path": "/x"})


def test_merged_segment_follows_the_apply_rule() -> None:
    w = 24 * HOUR_MS
    # Warehouse hits on [lo, hi) and the stored state's hit after hi make a member from the oldest of the
    # newest three, for a window; the state is the newest three inside the window of the newest.
    assert merged_segment([30], [10, 20], 0, 25, 3, w) == (10 + w, [10, 20, 30])
    # The stored hits inside [lo, hi) are replaced by the warehouse's (complete there), not added again.
    assert merged_segment([12, 20, 30], [10, 20], 0, 25, 3, w) == (10 + w, [10, 20, 30])
    assert merged_segment([], [10, 20], 0, 25, 3, w) == (0, [10, 20])  # two hits: no member yet
    assert merged_segment([], [0, w + 1, w + 2], 0, 2 * w, 3, w) == (0, [w + 1, w + 2])  # too far apart
    assert merged_segment([], [5, 9], 0, 25, 1, w) == (9 + w, [9])


def _warehouse(path: Path, rows: list[tuple[str, str, str, int, dict]]) -> DuckDBWarehouse:
    con = duckdb.connect(str(path))
    con.execute("create schema marts")
    con.execute("create table marts.fct_events (event_id varchar, tenant_id varchar, event_type varchar, "
                "anonymous_id varchar, received_at timestamptz, properties json)")
    con.executemany("insert into marts.fct_events values (?, ?, ?, ?, to_timestamp(? / 1000.0), ?)",
                    [(f"e{i}", t, e, a, ms, json.dumps(p)) for i, (t, e, a, ms, p) in enumerate(rows)])
    con.close()
    return DuckDBWarehouse(path)


def _scope(blocked: frozenset[tuple[str, int]] = frozenset(), now_ms: int | None = None,
           minutes: frozenset[tuple[str, int]] = frozenset()) -> Scope:
    # Hours H and H+1 are closed; H+2 is open (closed_before ends at H+2's start plus 30 min).
    return Scope((H - 1) * 60, (H + 4) * 60, (H + 2) * 3600 + 1800, blocked, minutes,
                 now_ms if now_ms is not None else (H + 2) * HOUR_MS + 1)


@pytest.mark.integration
def test_uniques_are_rebuilt_for_closed_clean_hours_only(redis_client: redis.Redis, tmp_path: Path) -> None:
    rows = [(T, "click", f"a{i}", H * HOUR_MS + i, {}) for i in range(400)]
    rows += [(T, "click", f"b{i}", (H + 1) * HOUR_MS + i, {}) for i in range(50)]
    rows += [(T, "click", f"c{i}", (H + 2) * HOUR_MS + i, {}) for i in range(30)]  # the open hour
    wh = _warehouse(tmp_path / "w.duckdb", rows)
    redis_client.pfadd(keys.uniques(T, "h", H), *[f"a{i}" for i in range(100)])  # a quarter survived
    planned = heal_uniques(redis_client, wh, _scope(), Retention(), dry_run=True)
    assert {(i.bucket, i.status) for i in planned} == {(f"hour {H}", "planned"), (f"hour {H + 1}", "planned")}
    assert redis_client.pfcount(keys.uniques(T, "h", H)) < 120  # a dry run writes nothing
    blocked = heal_uniques(redis_client, wh, _scope(frozenset({(T, H + 1)})), Retention(), dry_run=False)
    assert [i.bucket for i in blocked] == [f"hour {H}"]
    assert abs(redis_client.pfcount(keys.uniques(T, "h", H)) - 400) <= 8
    assert not redis_client.exists(keys.uniques(T, "h", H + 1)), "a blocked hour is not healed"
    heal_uniques(redis_client, wh, _scope(), Retention(day_s=4_000), dry_run=False)
    assert abs(redis_client.pfcount(keys.uniques(T, "h", H + 1)) - 50) <= 1
    assert 3_900 <= redis_client.ttl(keys.uniques(T, "h", H + 1)) <= 4_000
    assert not redis_client.exists(keys.uniques(T, "h", H + 2)), "an open hour is never healed"
    assert heal_uniques(redis_client, wh, _scope(), Retention(), dry_run=False) == [], "healing twice changes nothing"


@pytest.mark.integration
def test_top_pages_compare_and_set_per_path_and_move_the_day(redis_client: redis.Redis, tmp_path: Path) -> None:
    rows = [(T, "page_view", f"a{i}", H * HOUR_MS + i, {"path": "/x" if i % 3 else "/y"}) for i in range(90)]
    rows += [(T, "page_view", "a", H * HOUR_MS, {"path": 7}), (T, "click", "a", H * HOUR_MS, {"path": "/x"})]
    wh = _warehouse(tmp_path / "w.duckdb", rows)
    hour, day = keys.top_pages(T, "h", H), keys.top_pages(T, "d", H // 24)
    redis_client.zadd(hour, {"/x": 10, "/stray": 4})
    redis_client.zadd(day, {"/x": 25, "/stray": 4})  # the day also holds another hour's 15 views of /x
    items = heal_top_pages(redis_client, wh, _scope(), {T}, Retention(), dry_run=False)
    assert {(i.bucket, i.old, i.new, i.status) for i in items} == {
        (f"hour {H} /x", 10, 60, "healed"), (f"hour {H} /y", 0, 30, "healed"), (f"hour {H} /stray", 4, 0, "healed")}
    assert {p.decode(): int(s) for p, s in redis_client.zrange(hour, 0, -1, withscores=True)} == {"/x": 60, "/y": 30}
    assert {p.decode(): int(s) for p, s in redis_client.zrange(day, 0, -1, withscores=True)} == {"/x": 75, "/y": 30}
    # The compare-and-set: a score that moved since it was read is left alone.
    script = redis_client.register_script(TOP_PAGES_LUA)
    assert script(keys=[hour, day], args=[60, 60, "/x", 59, 1]) == [[b"skipped", 60]]
    assert redis_client.zscore(hour, "/x") == 60
    assert heal_top_pages(redis_client, wh, _scope(), {T}, Retention(), dry_run=False) == []


@pytest.mark.integration
def test_segments_raise_memberships_and_merge_states(redis_client: redis.Redis, tmp_path: Path) -> None:
    window = 24 * HOUR_MS
    h1, h2 = H * HOUR_MS + 1_000, H * HOUR_MS + 2_000  # in the warehouse (closed)
    h3 = (H + 2) * HOUR_MS + 40 * 60_000  # after the closed span (H+2:30): only the stream (Redis) has it
    rows = [(T, "page_view", "v1", h1, {"path": "/x"}), (T, "page_view", "v1", h2, {"path": "/x"}),
            (T, "page_view", "v1", h1 + 5, {"path": "/other"}), (T, "page_view", "v2", h1, {"path": "/x"}),
            (T, "page_view", "v3", h1, {"path": "/x"})]
    wh = _warehouse(tmp_path / "w.duckdb", rows)
    state = keys.segment_state(T, "fans", h3 // window)
    redis_client.hset(state, "v1", msgspec.msgpack.encode([h3]))  # what the rebuilt stream left
    member = keys.segment_members(T, "fans")
    redis_client.zadd(member, {"v3": h1 + 10 * window})  # a later membership the consumer wrote
    now_ms = h3 + 10_000
    items = heal_segments(redis_client, wh, _scope(now_ms=now_ms), [RULE], Retention(), dry_run=False)
    assert [(i.kind, i.bucket, i.old, i.new, i.status) for i in items] == [("segment", "fans", 1, 2, "healed")]
    assert redis_client.zscore(member, "v1") == h1 + window, "the three hits together make v1 a member"
    assert redis_client.zscore(member, "v3") == h1 + 10 * window, "a membership score is never lowered"
    assert redis_client.zscore(member, "v2") is None  # one hit: no member
    assert msgspec.msgpack.decode(redis_client.hget(state, "v1")) == [h1, h2, h3]
    v2_state = keys.segment_state(T, "fans", h1 // window)
    assert msgspec.msgpack.decode(redis_client.hget(v2_state, "v2")) == [h1]
    assert heal_segments(redis_client, wh, _scope(now_ms=now_ms), [RULE], Retention(), dry_run=False) == []
