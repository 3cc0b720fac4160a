"""The suppression list's Redis contract and the archiver's rule, against a real redis-server."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest
import redis

from streaming.archive.batch import build_batch, decode_lines
from streaming.warehouse.duckdb_load import load_hours
from streaming.archive.store import ArchiveStore
from streaming.events import EventDecoder
from streaming.kinesis.processor import StreamRecord
from streaming.privacy import suppression
from streaming.privacy.suppression import SuppressionCache
from streaming.speed.keys import suppression as suppress_key
from streaming.speed.keys import suppression_version as suppress_version_key
from streaming.suppression import subject_hash

pytestmark = pytest.mark.integration

S = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.timezone.utc)
S_MS = int(S.timestamp() * 1000)


def _record(seq: int, tenant: str, anon: str, user: str | None, received: dt.datetime,
            shard: str = "shardId-0") -> StreamRecord:
    at = received.isoformat().replace("+00:00", "Z")
    doc = {"event_id": str(uuid.uuid4()), "tenant_id": tenant, "event_type": "click", "anonymous_id": anon,
           "user_id": user, "occurred_at": at, "received_at": at, "source_id": "src", "source_seq": seq,
           "properties": {}, "schema_version": 1}
    return StreamRecord(shard, str(seq), anon, json.dumps(doc).encode(), received.timestamp())


def test_keys_hashes_and_versions(redis_client: redis.Redis) -> None:
    assert suppress_key("t1") == "tally:{t1}:suppress" and suppress_version_key("t1") == "tally:{t1}:suppress:ver"
    h = subject_hash("t1", "u1")
    assert len(h) == 64 and h != subject_hash("t2", "u1") and h != subject_hash("t1", "u1", salt="s")
    assert suppression.add(redis_client, "t1", [h], S_MS) == 1
    assert suppression.add(redis_client, "t1", [h], S_MS) == 0  # idempotent: no new version either
    assert int(redis_client.get(suppress_version_key("t1"))) == 1
    assert suppression.add(redis_client, "t1", [h], S_MS - 1000) == 0  # an earlier start wins
    assert suppression.entries(redis_client, "t1") == {h: S_MS - 1000}
    assert suppression.lift(redis_client, "t1", [h]) == 1 and suppression.entries(redis_client, "t1") == {}
    assert int(redis_client.get(suppress_version_key("t1"))) == 3


def test_the_cache_rereads_only_when_the_version_moves(redis_client: redis.Redis) -> None:
    cache = SuppressionCache(redis_client)
    cache.begin_batch()
    assert cache.since("t1", "u1", "a1") is None
    suppression.add(redis_client, "t1", [subject_hash("t1", "a1")], S_MS)
    assert cache.since("t1", None, "a1") is None  # same batch: the version is checked once per batch
    cache.begin_batch()
    assert cache.since("t1", None, "a1") == S_MS
    redis_client.hset(suppress_key("t1"), subject_hash("t1", "u9"), S_MS)  # a change without the version bump
    cache.begin_batch()
    assert cache.since("t1", "u9", "x") is None  # not re-read: the version did not move
    suppression.lift(redis_client, "t1", [subject_hash("t1", "a1")])
    cache.begin_batch()
    assert cache.since("t1", None, "a1") is None and cache.since("t1", "u9", "x") == S_MS


def test_archiver_rule_counts_earlier_events_writes_no_line_and_suppresses_later_ones(
        redis_client: redis.Redis, s3: Any, bucket: str, tmp_path: Path) -> None:
    suppression.add(redis_client, "t1", [subject_hash("t1", "u1"), subject_hash("t1", "a1")], S_MS)
    records = [
        _record(1, "t1", "a1", None, S - dt.timedelta(minutes=2)),  # before S: counted, no line (forgotten)
        _record(2, "t1", "a9", "u1", S - dt.timedelta(minutes=1)),  # by user id, before S: forgotten
        _record(3, "t1", "a1", None, S),                            # at S: suppressed
        _record(4, "t1", "a2", None, S + dt.timedelta(minutes=1)),  # someone else: kept
        _record(5, "t2", "a1", "u1", S + dt.timedelta(minutes=1)),  # same ids, other tenant: kept
    ]
    cache = SuppressionCache(redis_client)
    cache.begin_batch()
    batch = build_batch("shardId-0", records, EventDecoder(), future_limit=S + dt.timedelta(days=1),
                        suppressed_since=cache)
    entries = batch.manifest["objects"]
    lines = [json.loads(bytes(line.event)) for obj in batch.objects for line in decode_lines(obj.body)]
    assert [(d["tenant_id"], d["anonymous_id"]) for d in lines] == [("t1", "a2"), ("t2", "a1")]
    assert sum(e["records"] for e in entries) == 2 and sum(n for e in entries for *_, n in e["counts"]) == 4
    assert [c for e in entries for c in e.get("forgotten", [])] == [["t1", "click", "2026-01-05T09:58:00Z", 1], ["t1", "click", "2026-01-05T09:59:00Z", 1]]
    assert batch.manifest["suppressed"] == [["t1", "click", "2026-01-05T10:00:00Z", 1]]

    # An object whose every line was left out still loads (no rows) next to the others.
    only_forgotten = build_batch("shardId-1", [_record(6, "t1", "a1", None, S - dt.timedelta(minutes=3), "shardId-1")],
                                 EventDecoder(), future_limit=S + dt.timedelta(days=1), suppressed_since=cache)
    store = ArchiveStore(s3, bucket)
    store.write_batch(batch)
    store.write_batch(only_forgotten)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    result = load_hours(con, store, [S - dt.timedelta(hours=1), S])
    assert result.events == 2
    con.close()
