"""Test helpers: put generated records on a stream, read shards back as StreamRecords, and drive an
archiver through its lifecycle the way a worker would (used before and besides the lease worker)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from streaming.archive.processor import ArchiveProcessor
from streaming.generator import GeneratedRecord
from streaming.kinesis.processor import ShardContext, StreamRecord
from streaming.producer import Producer
from streaming.stream_reader import list_shard_ids


def send(kinesis: Any, stream: str, records: Iterable[GeneratedRecord]) -> int:
    n = 0
    with Producer(kinesis, stream) as producer:
        for record in records:
            producer.put(record.data, record.partition_key)
            n += 1
    return n


def read_shard(kinesis: Any, stream: str, shard_id: str, after: str | None = None,
               limit: int = 10_000) -> list[StreamRecord]:
    """Every record of a shard after ``after`` (all of them if None), up to the shard's current end."""
    kwargs: dict[str, Any] = {"StreamName": stream, "ShardId": shard_id}
    if after is None:
        kwargs["ShardIteratorType"] = "TRIM_HORIZON"
    else:
        kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
    iterator = kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
    out: list[StreamRecord] = []
    while iterator:
        page = kinesis.get_records(ShardIterator=iterator, Limit=limit)
        for raw in page["Records"]:
            arrival = raw["ApproximateArrivalTimestamp"]
            ts = arrival.timestamp() if isinstance(arrival, dt.datetime) else float(arrival)
            out.append(StreamRecord(shard_id, raw["SequenceNumber"], raw["PartitionKey"], raw["Data"], ts))
        if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
            break
        iterator = page.get("NextShardIterator")
    return out


def drive(kinesis: Any, stream: str, make: Callable[[], ArchiveProcessor], poll_size: int = 500,
          on_poll: Callable[[], None] | None = None) -> dict[str, ArchiveProcessor]:
    """Archive every shard to its current end: initialize, process in polls, shutdown."""
    processors: dict[str, ArchiveProcessor] = {}
    for shard_id in list_shard_ids(kinesis, stream):
        ctx = ShardContext(stream, shard_id, "test-worker", 1)
        processor = make()
        resume = processor.initialize(ctx, None)
        records = read_shard(kinesis, stream, shard_id, resume)
        for start in range(0, len(records), poll_size):
            processor.process_batch(ctx, records[start:start + poll_size], 0)
            if on_poll:
                on_poll()
        processor.shutdown(ctx)
        processors[shard_id] = processor
    return processors
