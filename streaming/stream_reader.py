"""Read a whole Kinesis stream once, shard by shard: used by `tally stream summary` and tests.

This is an inspection tool, not the consumer (that one keeps leases and checkpoints): it starts at
TRIM_HORIZON and stops at each shard's current end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streaming.events import Event, EventDecoder, Rejection


def list_shard_ids(kinesis: Any, stream_name: str) -> list[str]:
    shards: list[str] = []
    kwargs: dict[str, Any] = {"StreamName": stream_name}
    while True:
        page = kinesis.list_shards(**kwargs)
        shards.extend(s["ShardId"] for s in page["Shards"])
        token = page.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


def iter_stream(kinesis: Any, stream_name: str, limit: int = 10_000) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record now in the stream as (shard_id, record), oldest first per shard."""
    for shard_id in list_shard_ids(kinesis, stream_name):
        iterator = kinesis.get_shard_iterator(
            StreamName=stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=limit)
            for record in page["Records"]:
                yield shard_id, record
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")


@dataclass
class StreamSummary:
    records: int = 0
    by_tenant_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    by_shard: Counter[str] = field(default_factory=Counter)
    distinct_event_ids: int = 0


def summarize(kinesis: Any, stream_name: str, decoder: EventDecoder | None = None) -> StreamSummary:
    decoder = decoder or EventDecoder()
    limit = decoder.future_limit()
    summary = StreamSummary()
    seen: set[bytes] = set()
    for shard_id, record in iter_stream(kinesis, stream_name):
        summary.records += 1
        summary.by_shard[shard_id] += 1
        result = decoder.decode(record["Data"], limit)
        if isinstance(result, Rejection):
            summary.rejected[result.reason.value] += 1
        elif isinstance(result, Event):
            summary.by_tenant_type[(result.tenant_id, result.event_type.value)] += 1
            seen.add(result.event_id.bytes)
    summary.distinct_event_ids = len(seen)
    return summary
