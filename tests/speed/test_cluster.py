"""The same consumer code on a real 3-master Redis Cluster gives the same results as on one node."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig
from streaming.kinesis.processor import ShardContext
from streaming.query.api import SpeedQueries
from streaming.segments import load_rules
from streaming.speed import deadletters
from streaming.speed.consumer import SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.store import SpeedStore
from tests.speed.conftest import as_stream_records, assert_matches_ledger, generated, read_minute_counts, recent_start

pytestmark = pytest.mark.integration


def _load(client: Any, records: list[Any]) -> None:
    rules = load_rules()
    proc = SpeedProcessor(SpeedStore(client, "speed", rules), EventDecoder(), rules, OpsRecorder(client, "speed"))
    ctx = ShardContext("s", "shardId-000000000000", "w", 1)
    for i in range(0, len(records), 700):
        proc.process_batch(ctx, records[i:i + 700], 0)
    for i in range(0, len(records), 1000):  # a full re-read: no effect
        proc.process_batch(ctx, records[i:i + 1000], 0)


def _snapshot(client: Any) -> dict[str, Any]:
    q = SpeedQueries(client)
    import datetime as dt

    end = dt.datetime.now(dt.timezone.utc)
    start = end - dt.timedelta(hours=3)
    tenants = sorted({t for t, _, _ in read_minute_counts(client)})
    return {
        "minutes": read_minute_counts(client),
        "uniques": {t: q.uniques(t, start, end) for t in tenants},
        "top": {t: q.top_pages(t, start, end, 5) for t in tenants},
        "segments": {(t, s.name): q.segment_members(t, s.name) for t in tenants for s in load_rules()},
        "dead_letters": deadletters.counts(client),
    }


def test_cluster_results_equal_single_node(cluster_client: Any, redis_client: redis.Redis) -> None:
    datas, _, ledger = generated(GeneratorConfig(seed=8, tenants=20, duration_s=150, rate_per_s=150,
                                                 start=recent_start(150), duplicate_rate=0.05, malformed_rate=0.01))
    records = as_stream_records(datas)
    _load(cluster_client, records)
    _load(redis_client, records)
    # The tenants really are spread over the three masters.
    slots = {cluster_client.keyslot(f"tally:{{{t}}}:x") for t in ledger.counts}
    nodes = {cluster_client.get_node_from_key(f"tally:{{{t}}}:x").name for t in ledger.counts}
    assert len(slots) > 3 and len(nodes) == 3
    assert_matches_ledger(cluster_client, ledger)
    assert _snapshot(cluster_client) == _snapshot(redis_client)
