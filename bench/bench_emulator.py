"""The embedded AWS emulator's Kinesis throughput: PutRecords and GetRecords records/s, one client process.

Writes 200k generated events (~330 bytes each) into a 1-shard stream in PutRecords batches of 500, then
reads them back with GetRecords (Limit 10,000). The write rate is also measured on the last 50k records
alone, to show it stays flat as the shard fills (moto unpatched fell from ~5k to ~650 records/s).
"""

from __future__ import annotations

import time

from bench.servers import emulator
from streaming.aws import aws_client
from streaming.generator import GeneratorConfig, TrafficGenerator
from streaming.resources import ensure_stream

N = 200_000


def run() -> dict[str, float]:
    records = [(r.data, r.partition_key) for r in TrafficGenerator(GeneratorConfig(duration_s=N // 1000, rate_per_s=1000)).records()][:N]
    with emulator() as endpoint:
        kinesis = aws_client("kinesis", "us-east-1", endpoint)
        ensure_stream(kinesis, "bench", 1)
        started = time.perf_counter()
        tail_started = started
        for i in range(0, len(records), 500):
            if i == len(records) - 50_000:
                tail_started = time.perf_counter()
            kinesis.put_records(StreamName="bench", Records=[{"Data": d, "PartitionKey": k} for d, k in records[i:i + 500]])
        ended = time.perf_counter()
        shard = kinesis.list_shards(StreamName="bench")["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(StreamName="bench", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        read = 0
        read_started = time.perf_counter()
        while read < len(records):
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            read += len(page["Records"])
            iterator = page["NextShardIterator"]
        read_ended = time.perf_counter()
    return {
        "emulator_put_records_per_s": round(len(records) / (ended - started), 1),
        "emulator_put_records_per_s_last_50k": round(50_000 / (ended - tail_started), 1),
        "emulator_get_records_per_s": round(read / (read_ended - read_started), 1),
    }
