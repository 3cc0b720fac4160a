"""The patched emulator behaves like Kinesis where tally depends on it: order, iterators, trim, SHARD_END."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streaming.aws import aws_client
from streaming.resources import ensure_stream
from streaming.stack.process import free_port, port_in_use, stop_pid, wait_until
from streaming.stream_reader import iter_stream, list_shard_ids

pytestmark = pytest.mark.integration


def put(kinesis: Any, stream: str, n: int, key: str = "k") -> None:
    for start in range(0, n, 500):
        kinesis.put_records(StreamName=stream, Records=[
            {"Data": f"r{i}".encode(), "PartitionKey": key} for i in range(start, min(n, start + 500))
        ])


def test_put_get_in_order_with_iterators(kinesis: Any, stream_name: str) -> None:
    put(kinesis, stream_name, 1200)
    shard = next(s for s, r in iter_stream(kinesis, stream_name))
    it = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=it, Limit=1000)
    assert [r["Data"] for r in page["Records"]] == [f"r{i}".encode() for i in range(1000)]
    seq = page["Records"][499]["SequenceNumber"]
    after = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=shard, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                       StartingSequenceNumber=seq)["ShardIterator"]
    assert kinesis.get_records(ShardIterator=after, Limit=1)["Records"][0]["Data"] == b"r500"
    rest = kinesis.get_records(ShardIterator=page["NextShardIterator"], Limit=1000)
    assert len(rest["Records"]) == 200
    latest = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    assert kinesis.get_records(ShardIterator=latest)["Records"] == []


def test_split_keeps_parent_records_and_ends_it(kinesis: Any, stream_name: str) -> None:
    put(kinesis, stream_name, 50, key="same")
    parent = next(s for s, _ in iter_stream(kinesis, stream_name))
    desc = kinesis.list_shards(StreamName=stream_name)["Shards"]
    hk = next(s for s in desc if s["ShardId"] == parent)["HashKeyRange"]
    middle = (int(hk["StartingHashKey"]) + int(hk["EndingHashKey"])) // 2
    kinesis.split_shard(StreamName=stream_name, ShardToSplit=parent, NewStartingHashKey=str(middle))
    it = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=parent, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=it)
    assert len(page["Records"]) == 50, "the parent keeps its records"
    end = kinesis.get_records(ShardIterator=page["NextShardIterator"])
    assert end["Records"] == [] and end.get("NextShardIterator") is None, "SHARD_END"
    children = [s for s in kinesis.list_shards(StreamName=stream_name)["Shards"] if s.get("ParentShardId") == parent]
    assert len(children) == 2
    total_children = sum(1 for s, _ in iter_stream(kinesis, stream_name) if s in {c["ShardId"] for c in children})
    assert total_children == 0, "children do not get copies of the parent's records"


def test_trims_by_count(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streaming.stack.emulator", "--port", str(port),
                             "--max-records-per-shard", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_in_use(port), 60, "emulator", proc)
        kinesis = aws_client("kinesis", "us-east-1", f"http://127.0.0.1:{port}")
        ensure_stream(kinesis, "trim", 1)
        put(kinesis, "trim", 1000)
        shard = list_shard_ids(kinesis, "trim")[0]
        it = kinesis.get_shard_iterator(StreamName="trim", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records = kinesis.get_records(ShardIterator=it)["Records"]
        assert len(records) == 300 and records[0]["Data"] == b"r700" and records[-1]["Data"] == b"r999"
    finally:
        stop_pid(proc.pid)
        proc.wait()


def test_millis_behind_latest_reported(kinesis: Any, stream_name: str) -> None:
    put(kinesis, stream_name, 10, key="a")
    time.sleep(0.3)
    put(kinesis, stream_name, 10, key="a")
    shard = next(s for s, _ in iter_stream(kinesis, stream_name))
    it = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=it, Limit=5)
    assert page["MillisBehindLatest"] >= 200


def test_trimmed_records_are_freed() -> None:
    """moto's records were BaseModels, tracked in a class-wide list: trimmed ones were never freed."""
    import gc

    from streaming.stack.emulator import _Record, patch_moto

    patch_moto(retention_s=86_400, max_records_per_shard=100)
    from moto.kinesis.models import Shard

    shard = Shard(0, 0, 2**128)
    for _ in range(1_000):
        shard.put_record("k", "ZGF0YQ==", "")
    gc.collect()
    assert len(shard.records) <= 100
    assert sum(1 for o in gc.get_objects() if isinstance(o, _Record)) <= 100
