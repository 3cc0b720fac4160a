"""The speed consumer's GetRecords parser gives what botocore's own parser gives, read from the emulator."""

from __future__ import annotations

import os
from typing import Any

import pytest
from botocore.exceptions import ClientError

from streaming.aws import aws_client
from streaming.kinesis.worker import _to_record
from streaming.speed.fast_kinesis import install_fast_get_records

REGION = "us-east-1"


def _read_all(client: Any, stream: str, shard_id: str, limit: int) -> tuple[list[Any], list[tuple[bool, int]]]:
    """Every record of the shard as StreamRecords, and per page (has a next iterator, MillisBehindLatest)."""
    iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard_id,
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records, pages = [], []
    while iterator:
        page = client.get_records(ShardIterator=iterator, Limit=limit)
        records.extend(_to_record(shard_id, r) for r in page["Records"])
        pages.append((bool(page.get("NextShardIterator")), page.get("MillisBehindLatest", -1)))
        if not page["Records"]:
            break
        iterator = page.get("NextShardIterator")
    return records, pages


def test_the_fast_parser_reads_what_botocore_reads(kinesis: Any, stream_name: str) -> None:
    datas = [b"\x00", b"\xff\xfe binary", "ünïcode".encode(), os.urandom(1000), b"{}" * 5000] + \
            [f"r{i}".encode() for i in range(300)]
    for i in range(0, len(datas), 100):
        kinesis.put_records(StreamName=stream_name,
                            Records=[{"Data": d, "PartitionKey": f"pk{i + j}"} for j, d in enumerate(datas[i:i + 100])])
    fast = install_fast_get_records(aws_client("kinesis", REGION, kinesis.meta.endpoint_url))
    got_all = []
    for shard in kinesis.list_shards(StreamName=stream_name)["Shards"]:
        expected, expected_pages = _read_all(kinesis, stream_name, shard["ShardId"], limit=37)
        got, got_pages = _read_all(fast, stream_name, shard["ShardId"], limit=37)
        assert got == expected and got_pages == expected_pages
        assert all(r.arrival_ts > 0 and isinstance(r.data, bytes) for r in got)
        got_all.extend(got)
    assert sorted(r.data for r in got_all) == sorted(datas)


def test_errors_stay_botocores(kinesis: Any, stream_name: str) -> None:
    fast = install_fast_get_records(aws_client("kinesis", REGION, kinesis.meta.endpoint_url))
    with pytest.raises(ClientError) as err:
        fast.get_records(ShardIterator="not-an-iterator", Limit=10)
    assert err.value.response["Error"]["Code"]
