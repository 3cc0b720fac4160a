"""The planner's Redis memory against a real run of the same load on a real redis-server."""

from __future__ import annotations

import math
import time
import zlib
from collections import defaultdict
from typing import Any

import pytest

from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig, TrafficGenerator
from streaming.kinesis.processor import ShardContext, StreamRecord
from streaming.plan.figures import load_figures
from streaming.plan.load import Load
from streaming.plan.memory import dedup_lifetime_s, redis_memory
from streaming.segments import load_rules
from streaming.speed import keys
from streaming.speed.consumer import SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.store import DEDUP_BUCKETS, SpeedStore

pytestmark = pytest.mark.integration
SHARDS = 2
# Not the benchmark's traffic (seed 11, 50 tenants, 1 h at 150/s, 4 shards): a smaller load of its own.
LOAD = GeneratorConfig(seed=5, tenants=20, duration_s=900, rate_per_s=100, duplicate_rate=0.02, malformed_rate=0.002,
                       start="2026-03-01T00:00:00Z")


def _apply(client: Any, config: GeneratorConfig) -> Any:
    gen = TrafficGenerator(config)
    by_shard: dict[str, list[StreamRecord]] = defaultdict(list)
    for r in gen.records():
        shard = f"shardId-{zlib.crc32(r.partition_key.encode()) % SHARDS:012d}"
        by_shard[shard].append(StreamRecord(shard, str(len(by_shard[shard]) + 1), r.partition_key, r.data, 0.0))
    rules = load_rules()
    proc = SpeedProcessor(SpeedStore(client, "speed", rules), EventDecoder(), rules, OpsRecorder(client, "speed"))
    for shard, records in by_shard.items():
        for i in range(0, len(records), 5_000):
            proc.process_batch(ShardContext("s", shard, "w", 1), records[i:i + 5_000], 0)
    return gen.ledger


def test_planned_redis_memory_is_within_20_percent_of_a_real_run(redis_client: Any) -> None:
    warm = GeneratorConfig(seed=1, tenants=2, duration_s=5, rate_per_s=10)
    _apply(redis_client, warm)  # load the scripts, so they are not counted
    redis_client.flushall()
    before = int(redis_client.info("memory")["used_memory"])
    ledger = _apply(redis_client, LOAD)
    measured = int(redis_client.info("memory")["used_memory"]) - before

    families = {keys.family_of(k) for k in redis_client.scan_iter(count=1000)}
    assert keys.OTHER_FAMILY not in families  # every key the run wrote has a family the planner models

    malformed = sum(ledger.dead_letters.values()) / ledger.records_total
    load = Load(events_per_day=ledger.valid_events / (1 - malformed) / LOAD.duration_s * 86_400,
                tenants=LOAD.tenants, malformed_rate=malformed, pages=8)
    planned = redis_memory(load, load_figures(), SHARDS, elapsed_s=LOAD.duration_s).used_bytes
    assert measured > 5_000_000
    print(f"planned {planned:,.0f} B, measured {measured:,.0f} B ({planned / measured - 1:+.1%})")
    assert abs(planned - measured) <= 0.2 * measured, (planned, measured)


def test_dedup_sets_expire_when_the_planner_says(redis_client: Any) -> None:
    horizon = 86_400
    _apply(redis_client, GeneratorConfig(seed=2, tenants=3, duration_s=20, rate_per_s=20))
    now = time.time()
    seen = [k.decode() for k in redis_client.scan_iter(match="tally:{*}:seen:*")]
    assert seen
    average, longest = dedup_lifetime_s(horizon)
    bucket_s = math.ceil(horizon / DEDUP_BUCKETS)
    for key in seen:
        bucket = int(key.rsplit(":", 1)[1])
        # An id added now lives until its bucket expires: the planner's longest life from its bucket's start.
        expires_at = now + redis_client.ttl(key)
        assert abs(expires_at - (bucket * bucket_s + longest)) <= 5
        assert (longest - bucket_s) <= expires_at - now <= longest + 5
    assert average == longest - bucket_s / 2
