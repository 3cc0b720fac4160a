"""Run the real layers on generated traffic for the reconciliation tests.

Stream: the real producer into the emulator. Speed layer: the lease worker with the speed layer's own
processor factory (optionally wrapped to inject a fault) into a real redis-server. Batch layer: the
lease worker with the archiver's processor, then the loader into a DuckDB file, then real dbt
(``fct_events`` and its parents).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from streaming.warehouse.duckdb_load import load_hours
from streaming.archive.processor import GROUP as ARCHIVE_GROUP
from streaming.archive.processor import FlushPolicy, processor_factory as archive_factory
from streaming.archive.store import ArchiveStore
from streaming.events import EventDecoder
from streaming.kinesis.processor import ShardContext, StreamRecord
from streaming.kinesis.worker import Worker
from streaming.settings import Settings
from streaming.speed.run import processor_factory as speed_factory
from tests.batch.streams import send  # noqa: F401 - re-exported for the reconciliation tests

ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT = ROOT / "dbt_project"



class SkippingProcessor:
    """Wraps a real processor and hides some records from it: a speed layer that skipped them."""

    def __init__(self, inner: Any, skip: Callable[[StreamRecord], bool]) -> None:
        self.inner = inner
        self.skip = skip

    def initialize(self, ctx: ShardContext, checkpoint: str | None) -> str | None:
        return self.inner.initialize(ctx, checkpoint)

    def process_batch(self, ctx: ShardContext, records: list[StreamRecord], millis_behind_latest: int) -> str | None:
        kept = [r for r in records if not self.skip(r)]
        self.inner.process_batch(ctx, kept, millis_behind_latest)
        # The checkpoint moves past the skipped records as if they had been applied: silent loss.
        return records[-1].sequence_number if records else None

    def lease_lost(self, ctx: ShardContext) -> None:
        self.inner.lease_lost(ctx)

    def shard_ended(self, ctx: ShardContext) -> None:
        self.inner.shard_ended(ctx)

    def shutdown(self, ctx: ShardContext) -> None:
        self.inner.shutdown(ctx)


class StallingProcessor:
    """Wraps a real processor that stops at the first record ``stall_at`` matches: it neither applies
    nor checkpoints anything from there on (a consumer stuck on a shard). It still passes the worker's
    empty ticks on, as a consumer stuck on one record still commits what it read before it (the real
    processor settles its in-flight batch on the next call)."""

    def __init__(self, inner: Any, stall_at: Callable[[StreamRecord], bool]) -> None:
        self.inner = inner
        self.stall_at = stall_at
        self.stalled = False

    def initialize(self, ctx: ShardContext, checkpoint: str | None) -> str | None:
        return self.inner.initialize(ctx, checkpoint)

    def process_batch(self, ctx: ShardContext, records: list[StreamRecord], millis_behind_latest: int) -> str | None:
        kept: list[StreamRecord] = []
        for record in records if not self.stalled else []:
            if self.stall_at(record):
                self.stalled = True
                break
            kept.append(record)
        return self.inner.process_batch(ctx, kept, millis_behind_latest)

    def lease_lost(self, ctx: ShardContext) -> None:
        self.inner.lease_lost(ctx)

    def shard_ended(self, ctx: ShardContext) -> None:
        self.inner.shard_ended(ctx)

    def shutdown(self, ctx: ShardContext) -> None:
        self.inner.shutdown(ctx)


def run_speed(settings: Settings, kinesis: Any, dynamodb: Any, redis_client: Any,
              skip: Callable[[StreamRecord], bool] | None = None, group: str = "speed",
              stall_at: Callable[[StreamRecord], bool] | None = None) -> None:
    make = speed_factory(settings, redis_client, group)
    factory = make if skip is None else (lambda: SkippingProcessor(make(), skip))
    if stall_at is not None:
        factory = (lambda inner: (lambda: StallingProcessor(inner(), stall_at)))(factory)
    Worker(kinesis, dynamodb, settings.stream_name, settings.lease_table, group, factory).run_until_caught_up(120)


def run_archiver(settings: Settings, kinesis: Any, dynamodb: Any, s3: Any, max_records: int = 400) -> None:
    store = ArchiveStore(s3, settings.bucket)
    factory = archive_factory(store, EventDecoder(), FlushPolicy(max_records=max_records, flush_s=3600))
    Worker(kinesis, dynamodb, settings.stream_name, settings.lease_table, ARCHIVE_GROUP, factory).run_until_caught_up(120)


def load_warehouse(settings: Settings, s3: Any) -> None:
    store = ArchiveStore(s3, settings.bucket)
    con = duckdb.connect(str(settings.duckdb_path))
    try:
        load_hours(con, store, store.hours_with_objects())
    finally:
        con.close()


def run_dbt(settings: Settings, target_dir: Path, select: str = "+fct_events") -> None:
    env = {**os.environ, "TALLY_DUCKDB_PATH": str(settings.duckdb_path), "DBT_LOG_PATH": str(target_dir / "logs")}
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run(
        [str(dbt), "run", "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT),
         "--target-path", str(target_dir / "target"), "--select", select, "--full-refresh", "--quiet"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dbt run failed:\n{proc.stdout}\n{proc.stderr}")


def copy_bucket(s3: Any, source: str, target: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source):
        for item in page.get("Contents", []):
            s3.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]})


def clone(settings: Settings, tmp: Path, **changes: Any) -> Settings:
    """The same run's settings with per-test copies (a DuckDB file copy, another bucket or lease table)."""
    if "duckdb_path" not in changes:
        copy = tmp / "warehouse.duckdb"
        shutil.copy(settings.duckdb_path, copy)
        changes["duckdb_path"] = copy
    changes.setdefault("home", tmp / "tally_home")
    return dataclasses.replace(settings, **changes)
