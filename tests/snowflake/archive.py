"""A generated run turned into committed archive batches (without a stream): two shards, batches of a
few hundred records, and one overlapping batch re-written by a "zombie" archiver, so loaders must
de-duplicate on (shard, sequence number)."""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from pathlib import Path

from streaming.archive.batch import build_batch
from streaming.archive.store import ArchiveStore
from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig, read_run
from streaming.kinesis.processor import StreamRecord

#: Two archive hours (00 and 01), duplicates, late events across the hour edge, malformed records.
SNOWFLAKE_RUN = GeneratorConfig(seed=11, tenants=5, start="2026-01-01T00:45:00Z", duration_s=1800, rate_per_s=2.0,
                                duplicate_rate=0.05, late_rate=0.05, late_delay_s=(60, 900), malformed_rate=0.03)
SHARDS = ("shardId-000000000000", "shardId-000000000001")
BATCH = 250


@dataclass(frozen=True)
class ArchiveFixture:
    store: ArchiveStore
    hours: list[dt.datetime]
    records: int


def write_archive(store: ArchiveStore, run_dir: Path) -> ArchiveFixture:
    start = dt.datetime.fromisoformat(SNOWFLAKE_RUN.start.replace("Z", "+00:00")).timestamp()
    per_shard: dict[str, list[StreamRecord]] = {s: [] for s in SHARDS}
    for i, rec in enumerate(read_run(run_dir)):
        shard = SHARDS[zlib.crc32(rec.partition_key.encode()) % len(SHARDS)]
        seq = str(1000 + 10 * len(per_shard[shard]))
        per_shard[shard].append(StreamRecord(shard, seq, rec.partition_key, rec.data, start + rec.emit_ms / 1000))
    decoder = EventDecoder()
    limit = decoder.future_limit(start + SNOWFLAKE_RUN.duration_s + 3600)
    total = 0
    for shard, records in per_shard.items():
        total += len(records)
        for i in range(0, len(records), BATCH):
            store.write_batch(build_batch(shard, records[i:i + BATCH], decoder, limit))
    zombie = per_shard[SHARDS[0]][BATCH // 2: BATCH + BATCH // 2]
    store.write_batch(build_batch(SHARDS[0], zombie, decoder, limit))
    return ArchiveFixture(store, store.hours_with_objects(), total)
