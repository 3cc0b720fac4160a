"""The speed layer as an AWS Lambda handler behind a Kinesis event source mapping.

Configure the mapping with ``FunctionResponseTypes: [ReportBatchItemFailures]`` and
``ParallelizationFactor: 1`` (the per-shard markers assume one batch of a shard at a time, which is what
the mapping guarantees at factor 1). The same aggregate/apply code as the long-running consumer runs
here. When Redis fails, the response names the batch's first record as failed, so Lambda re-delivers
the whole batch from there; tenants that did commit are no-ops on the retry thanks to their markers.

After a shard's batch commits, the handler records the shard's position in the lease table (group
``lambda``: the last sequence number and its arrival time), as the lease worker does beside its
checkpoints, so reconciliation knows what the speed layer has had the chance to see. That write is
observability: if it fails the batch still counts as done, and reconciliation holds the cells the
unrecorded records touch as pending rather than blaming a layer.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streaming.events import EventDecoder
from streaming.kinesis.processor import Position, ShardContext, StreamRecord
from streaming.segments import load_rules
from streaming.speed.connect import TRANSIENT_ERRORS, connect
from streaming.speed.consumer import RetryPolicy, SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.store import Retention, SpeedStore

if TYPE_CHECKING:
    from streaming.kinesis.leases import LeaseTable

log = logging.getLogger(__name__)
LAMBDA_GROUP = "lambda"
#: Lambda has no leases: the mapping itself runs one invocation per shard at a time.
LAMBDA_LEASE_TOKEN = 0

_processor: SpeedProcessor | None = None
_positions: LeaseTable | None = None


def records_from_event(event: dict[str, Any]) -> list[StreamRecord]:
    """Kinesis event source mapping payload -> StreamRecords (eventID is ``shardId-...:sequence``)."""
    out = []
    for item in event.get("Records", []):
        kin = item["kinesis"]
        shard_id = item["eventID"].split(":", 1)[0]
        out.append(StreamRecord(
            shard_id=shard_id, sequence_number=kin["sequenceNumber"], partition_key=kin.get("partitionKey", ""),
            data=base64.b64decode(kin["data"]), arrival_ts=float(kin.get("approximateArrivalTimestamp", 0.0)),
        ))
    return out


def build_processor() -> SpeedProcessor:
    """From settings (TALLY_REDIS_URL etc.), once per Lambda container."""
    from streaming.settings import load_settings

    settings = load_settings()
    if settings.redis_url is None:
        raise RuntimeError("TALLY_REDIS_URL must be set for the Lambda handler")
    client = connect(settings.redis_url)
    rules = load_rules()
    store = SpeedStore(client, LAMBDA_GROUP, rules, settings.dedup_horizon_s, Retention.from_settings(settings), settings.privacy_salt)
    # Inside Lambda a short wait is enough: the mapping retries the batch anyway.
    return SpeedProcessor(store, EventDecoder(settings.max_event_bytes, settings.max_future_skew_s), rules,
                          OpsRecorder(client, LAMBDA_GROUP), RetryPolicy(max_wait_s=5.0))


def build_positions() -> LeaseTable | None:
    """The lease table positions are recorded in (the default credential chain), or None without boto3
    (the Lambda runtime provides it; the zip does not carry it)."""
    try:
        from streaming.aws import aws_client
        from streaming.kinesis.leases import LeaseTable
    except ImportError as exc:
        log.warning("positions not recorded: %s (reconciliation holds this layer's cells as pending)", exc)
        return None
    from streaming.settings import load_settings

    settings = load_settings()
    return LeaseTable(aws_client("dynamodb", settings.aws_region, settings.aws_endpoint_url), settings.lease_table,
                      LAMBDA_GROUP, settings.stream_name)


def handle(event: dict[str, Any], processor: SpeedProcessor, positions: LeaseTable | None = None) -> dict[str, Any]:
    records = records_from_event(event)
    if not records:
        return {"batchItemFailures": []}
    by_shard: dict[str, list[StreamRecord]] = {}
    for record in records:
        by_shard.setdefault(record.shard_id, []).append(record)
    failures: list[dict[str, str]] = []
    for shard_id, shard_records in by_shard.items():
        ctx = ShardContext(stream_name=_stream_name(event), shard_id=shard_id, worker_id="lambda",
                           lease_token=LAMBDA_LEASE_TOKEN)
        try:
            processor.process_batch(ctx, shard_records, 0)
        except Exception as exc:  # noqa: BLE001 - reported as failed items, never swallowed
            if not isinstance(exc, TRANSIENT_ERRORS) and not _caused_by_redis(exc):
                raise
            log.warning("Redis unavailable (%s): reporting the batch from %s as failed",
                        type(exc).__name__, shard_records[0].sequence_number)
            failures.append({"itemIdentifier": shard_records[0].sequence_number})
            continue
        if positions is not None:
            last = shard_records[-1]
            try:
                positions.record_position(shard_id, last.sequence_number,
                                          Position(last.arrival_ts, False, time.time()))
            except Exception as exc:  # noqa: BLE001 - observability; reconciliation holds, never blames
                log.warning("could not record the position of %s (%s)", shard_id, type(exc).__name__)
    return {"batchItemFailures": failures}


def _caused_by_redis(exc: BaseException) -> bool:
    cause = exc.__cause__
    return cause is not None and isinstance(cause, TRANSIENT_ERRORS)


def _stream_name(event: dict[str, Any]) -> str:
    records = event.get("Records") or [{}]
    arn = records[0].get("eventSourceARN", "")
    return arn.rsplit("/", 1)[-1] if "/" in arn else arn


def handler(event: dict[str, Any], context: Any, _factory: Callable[[], SpeedProcessor] = build_processor,
            _positions_factory: Callable[[], LeaseTable | None] = build_positions) -> dict[str, Any]:
    """The Lambda entry point: ``streaming.speed.lambda_handler.handler``."""
    global _processor, _positions
    if _processor is None:
        _processor = _factory()
        _positions = _positions_factory()
    return handle(event, _processor, _positions)
