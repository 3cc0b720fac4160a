"""The Lambda handler on Kinesis-event-shaped payloads: same counters, ReportBatchItemFailures on Redis failure."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig
from streaming.segments import load_rules
from streaming.speed import lambda_handler
from streaming.speed.consumer import RetryPolicy, SpeedProcessor
from streaming.speed.store import SpeedStore
from streaming.stack.redis_local import RedisServer
from tests.speed.conftest import assert_matches_ledger, generated

pytestmark = pytest.mark.integration
SHARD = "shardId-000000000003"
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/tally-events"


def kinesis_event(datas: list[bytes], first_seq: int) -> dict[str, Any]:
    """The payload a Kinesis event source mapping hands the function."""
    records = []
    for i, data in enumerate(datas):
        seq = str(49_600_000_000_000_000_000_000_000_000_000_000_000_000_000 + first_seq + i)
        records.append({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": f"pk-{i}", "sequenceNumber": seq,
                        "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": 1_767_225_600.123},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{SHARD}:{seq}",
            "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/tally",
            "awsRegion": "us-east-1", "eventSourceARN": ARN,
        })
    return {"Records": records}


def _processor(client: Any) -> SpeedProcessor:
    rules = load_rules()
    return SpeedProcessor(SpeedStore(client, lambda_handler.LAMBDA_GROUP, rules), EventDecoder(), rules,
                          retry=RetryPolicy(max_wait_s=0.5, base_s=0.05))


def test_batches_apply_exactly_once_and_redis_failure_reports_the_batch(tmp_path: Path) -> None:
    datas, _, ledger = generated(GeneratorConfig(seed=21, tenants=8, duration_s=60, rate_per_s=100,
                                                 duplicate_rate=0.05, malformed_rate=0.02))
    server = RedisServer(workdir=tmp_path, appendonly=True).start()
    port = server.port
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    proc = _processor(client)
    try:
        size = 500
        events = [kinesis_event(datas[i:i + size], i) for i in range(0, len(datas), size)]
        half = len(events) // 2
        for event in events[:half]:
            assert lambda_handler.handler(event, None, _factory=lambda: proc,
                                          _positions_factory=lambda: None) == {"batchItemFailures": []}
        server.kill()
        failed = lambda_handler.handle(events[half], proc)
        assert failed == {"batchItemFailures": [{"itemIdentifier": events[half]["Records"][0]["kinesis"]["sequenceNumber"]}]}
        server = RedisServer(workdir=tmp_path, port=port, appendonly=True).start()
        # Lambda re-delivers the failed batch (and, at least once, one that had succeeded).
        for event in [events[half - 1], *events[half:]]:
            assert lambda_handler.handle(event, proc) == {"batchItemFailures": []}
        assert_matches_ledger(client, ledger)
    finally:
        server.stop()
        lambda_handler._processor = None


def test_each_committed_batch_records_the_shards_position_and_it_never_moves_back(
        redis_client: redis.Redis, dynamodb: Any, lease_table: str) -> None:
    from streaming.kinesis.leases import LeaseTable

    datas, _, _ = generated(GeneratorConfig(seed=4, tenants=3, duration_s=10, rate_per_s=50))
    events = [kinesis_event(datas[i:i + 100], i) for i in range(0, 300, 100)]
    positions = LeaseTable(dynamodb, lease_table, lambda_handler.LAMBDA_GROUP, "tally-events")
    proc = _processor(redis_client)
    for event in [*events, events[0]]:  # the first batch is re-delivered last
        assert lambda_handler.handle(event, proc, positions) == {"batchItemFailures": []}
    lease = positions.leases()[SHARD]
    assert lease.checkpoint == events[-1]["Records"][-1]["kinesis"]["sequenceNumber"]
    assert lease.position.arrival == pytest.approx(1_767_225_600.123)
    assert not lease.position.at_tip  # a Lambda never sees the tip: reconciliation reads the stream for it


@pytest.mark.unit
def test_records_from_event_keep_shard_sequence_and_bytes() -> None:
    event = kinesis_event([b"abc", b"\xff"], 7)
    records = lambda_handler.records_from_event(event)
    assert [(r.shard_id, r.data) for r in records] == [(SHARD, b"abc"), (SHARD, b"\xff")]
    assert records[0].sequence_number == event["Records"][0]["kinesis"]["sequenceNumber"]
    assert records[0].arrival_ts == pytest.approx(1_767_225_600.123)
