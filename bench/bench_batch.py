"""Batch-layer benchmarks.

1. Archiver: records already fetched (StreamRecords in memory), one process: decode, split by hour,
   gzip, write objects + manifest to S3 (the emulator started here). ``batch_archive_events_per_s``.
2. 1M generated events already in the archive (written here, untimed): load every hour into DuckDB
   (``streaming.warehouse.duckdb.DuckDBWarehouse.load_hours``) and ``dbt build`` (the real dbt CLI, target local).
   ``batch_1m_total_s``, ``batch_load_events_per_s``, ``batch_dbt_events_per_s``. Target ≤ 30 s.
3. One more hour of 50,000 events arrives: load that hour, ``dbt build`` again (fct_events incremental).
   ``batch_incremental_hour_s``. Target ≤ 10 s.

dbt runs with partial-parse state parsed for the bench's own profile (untimed, as a deployed project
parses once for its warehouse: assets/dbt/project.py), so the figure is the build, not a cold parse;
dbt's partial parse is void for another DuckDB path. The build is the one Dagster runs: data tests
included, unit tests left to CI (assets.dbt.assets.PRODUCTION_BUILD_ARGS). Timings are noisy on a
shared 2-core machine.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path

from bench.servers import emulator
from streaming.archive.batch import build_batch
from streaming.archive.processor import ArchiveProcessor, FlushPolicy
from streaming.archive.store import ArchiveStore
from streaming.aws import aws_client
from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig, TrafficGenerator
from streaming.kinesis.processor import ShardContext, StreamRecord
from streaming.resources import ensure_bucket
from streaming.warehouse.duckdb import DuckDBWarehouse

ROOT = Path(__file__).resolve().parents[1]
DBT_DIR = ROOT / "dbt_project"
SHARDS = 4


def _records(config: GeneratorConfig, first_seq: dict[str, int] | None = None) -> list[StreamRecord]:
    """Generated traffic as the archiver would receive it: per shard by partition key, arrival = emit."""
    seq = defaultdict(int, first_seq or {})
    out: list[StreamRecord] = []
    start = config.start_ms / 1000
    for rec in TrafficGenerator(config).records():
        shard = f"shardId-{zlib.crc32(rec.partition_key.encode()) % SHARDS:012d}"
        seq[shard] += 1
        out.append(StreamRecord(shard, str(seq[shard]), rec.partition_key, rec.data, start + rec.emit_ms / 1000))
    if first_seq is not None:
        first_seq.update(seq)
    return out


def _by_shard(records: list[StreamRecord]) -> dict[str, list[StreamRecord]]:
    shards: dict[str, list[StreamRecord]] = defaultdict(list)
    for r in records:
        shards[r.shard_id].append(r)
    return shards


def _write_archive(store: ArchiveStore, records: list[StreamRecord], batch: int = 20_000) -> None:
    decoder = EventDecoder()
    for shard, recs in _by_shard(records).items():
        for i in range(0, len(recs), batch):
            store.write_batch(build_batch(shard, recs[i:i + batch], decoder))


def _dbt(command: list[str], db: Path, target: Path) -> float:
    env = {**os.environ, "TALLY_DUCKDB_PATH": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "dbt"), *command, "--quiet", "--profiles-dir", ".",
                    "--target", "local", "--target-path", str(target)], cwd=DBT_DIR, env=env, check=True)
    return time.perf_counter() - started


def _dbt_build(db: Path, target: Path) -> float:
    from assets.dbt.assets import PRODUCTION_BUILD_ARGS

    return _dbt(["build", *PRODUCTION_BUILD_ARGS], db, target)


def _bench_archiver(store: ArchiveStore) -> float:
    config = GeneratorConfig(seed=11, tenants=50, start="2026-02-01T00:00:00Z", duration_s=1000, rate_per_s=200,
                             duplicate_rate=0.01, late_rate=0.01, malformed_rate=0.005)
    shards = _by_shard(_records(config))
    total = sum(len(v) for v in shards.values())
    started = time.perf_counter()
    for shard, recs in shards.items():
        ctx = ShardContext("bench", shard, "bench", 1)
        processor = ArchiveProcessor(store, EventDecoder(), FlushPolicy())
        processor.initialize(ctx, None)
        for i in range(0, len(recs), 10_000):  # GetRecords pages
            processor.process_batch(ctx, recs[i:i + 10_000], 0)
        processor.shutdown(ctx)
    return total / (time.perf_counter() - started)


def run() -> dict[str, float]:
    from assets.dbt.project import prepare_manifest

    prepare_manifest(DBT_DIR, str(Path(sys.executable).parent / "dbt"))
    results: dict[str, float] = {}
    with emulator() as endpoint, tempfile.TemporaryDirectory(prefix="tally-bench-batch-") as tmp:
        s3 = aws_client("s3", "us-east-1", endpoint)
        ensure_bucket(s3, "bench-archiver", "us-east-1")
        results["batch_archive_events_per_s"] = round(_bench_archiver(ArchiveStore(s3, "bench-archiver")), 1)

        ensure_bucket(s3, "bench-warehouse", "us-east-1")
        store = ArchiveStore(s3, "bench-warehouse")
        seqs: dict[str, int] = {}
        big = GeneratorConfig(seed=1, tenants=200, start="2026-03-01T00:00:00Z", duration_s=7200, rate_per_s=1000 / 7.2,
                              duplicate_rate=0.01, late_rate=0.01, malformed_rate=0.002)
        records = _records(big, seqs)
        _write_archive(store, records)
        events = sum(1 for r in records)
        hours = store.hours_with_objects()

        target = Path(tmp) / "target"
        target.mkdir()
        db = Path(tmp) / "warehouse.duckdb"
        _dbt(["parse"], db, target)  # untimed: the deployed project's parse
        started = time.perf_counter()
        loaded = DuckDBWarehouse(db).load_hours(store, hours)
        load_s = time.perf_counter() - started
        dbt_s = _dbt_build(db, target)
        results["batch_1m_total_s"] = round(load_s + dbt_s, 2)
        results["batch_load_events_per_s"] = round((loaded.events + loaded.dead_letters) / load_s, 1)
        results["batch_dbt_events_per_s"] = round(loaded.events / dbt_s, 1)
        print(f"   1M: {events:,} records, {len(hours)} hours, load {load_s:.2f} s, dbt build {dbt_s:.2f} s")

        # One more hour of 50,000 events (the hour after the big run), then an incremental build.
        hour = GeneratorConfig(seed=2, tenants=200, start="2026-03-01T02:00:00Z", duration_s=3600,
                               rate_per_s=50_000 / 3600, duplicate_rate=0.01, late_rate=0.0)
        _write_archive(store, _records(hour, seqs))
        new_hour = dt.datetime(2026, 3, 1, 2, tzinfo=dt.timezone.utc)
        started = time.perf_counter()
        DuckDBWarehouse(db).load_hours(store, [new_hour])
        inc_load = time.perf_counter() - started
        inc_dbt = _dbt_build(db, target)
        results["batch_incremental_hour_s"] = round(inc_load + inc_dbt, 2)
        print(f"   incremental hour: load {inc_load:.2f} s, dbt build {inc_dbt:.2f} s")
    return results
