"""Reconcile a time range of the real layers: read them, judge, report (what the CLI and Dagster call).

This is the thin shell around the pure core: it builds the three count tables from S3, DuckDB and
Redis, the watermarks (archive manifests, warehouse max ``received_at``, the speed consumer's lease
checkpoints mapped through the manifests), the drill-down source and the sequence evidence.
"""

from __future__ import annotations

import datetime as dt
import getpass
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from streaming.kinesis.leases import LeaseTable
from streaming.reconcile.engine import reconcile
from streaming.reconcile.model import Config, Inputs, Result, Tolerance, Watermarks
from streaming.reconcile.report import RunInfo, write_report
from streaming.reconcile.sequences import SEQUENCE_MARGIN_MIN
from streaming.reconcile.sources.archive import ArchiveReader, ArchiveSnapshot
from streaming.reconcile.sources.speed import SpeedReader, speed_watermark
from streaming.reconcile.sources.warehouse import WarehouseReader
from streaming.settings import Settings

SPEED_GROUP = "speed"
UTC = dt.timezone.utc


@dataclass
class Layers:
    """Clients of the real layers. ``dynamodb`` may be None: the speed watermark then falls back to
    the archive's (only safe when the consumer is known to be caught up)."""

    s3: Any
    bucket: str
    redis: Any
    warehouse: Any  # WarehouseReader (DuckDB) or SnowflakeWarehouseReader: the same interface
    dynamodb: Any | None = None
    lease_table: str | None = None
    stream_name: str | None = None
    speed_group: str = SPEED_GROUP

    @classmethod
    def from_settings(cls, settings: Settings) -> Layers:
        from streaming.aws import aws_client
        from streaming.speed.connect import connect
        from streaming.stack.manager import resolve_endpoints

        endpoints = resolve_endpoints(settings)
        return cls(
            s3=aws_client("s3", settings.aws_region, endpoints.aws_endpoint_url),
            bucket=settings.bucket,
            redis=connect(endpoints.redis_url),
            warehouse=warehouse_reader(settings),
            dynamodb=aws_client("dynamodb", settings.aws_region, endpoints.aws_endpoint_url),
            lease_table=settings.lease_table,
            stream_name=settings.stream_name,
        )


def warehouse_reader(settings: Settings) -> Any:
    """DuckDB locally; in prod, the Snowflake reader (same interface, Snowflake SQL)."""
    if settings.is_local:
        return WarehouseReader(settings.duckdb_path)
    from streaming.settings import require_snowflake
    from streaming.warehouse.snowflake import connect
    from streaming.warehouse.snowflake_reader import SnowflakeWarehouseReader

    snowflake = require_snowflake(settings)
    return SnowflakeWarehouseReader(lambda: connect(snowflake))


class LayerEventIds:
    """The core's drill-down protocol over the real archive and warehouse."""

    def __init__(self, archive: ArchiveReader, warehouse: Any) -> None:
        self.archive = archive
        self.warehouse = warehouse

    def archive_events(self, hours: list[int]) -> pd.DataFrame:
        return self.archive.events(hours)

    def warehouse_events(self, hours: list[int], table: str) -> pd.DataFrame:
        return self.warehouse.events(hours, table)


def minute_of(ts: dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp()) // 60


def collect(layers: Layers, start_minute: int, end_minute: int, lateness_s: int) -> tuple[Inputs, ArchiveSnapshot]:
    """Read the three layers for ``[start_minute, end_minute)`` into the core's inputs."""
    archive = ArchiveReader(layers.s3, layers.bucket)
    snapshot = archive.snapshot(start_minute, end_minute)
    speed = SpeedReader(layers.redis)
    if layers.dynamodb is not None and layers.lease_table and layers.stream_name:
        leases = LeaseTable(layers.dynamodb, layers.lease_table, layers.speed_group, layers.stream_name).leases()
        speed_mark = speed_watermark(leases, snapshot.shards)
    else:
        speed_mark = snapshot.watermark
    marks = Watermarks(archive=snapshot.watermark, warehouse=layers.warehouse.watermark(), speed=speed_mark)
    speed_counts = speed.counts(start_minute, end_minute)
    warehouse_counts = layers.warehouse.counts(start_minute, end_minute, lateness_s)
    tenants = sorted(set(speed_counts["tenant_id"]) | set(snapshot.counts["tenant_id"])
                     | set(warehouse_counts["tenant_id"]))
    rollups = pd.concat([speed.rollups(tenants, start_minute, end_minute),
                         layers.warehouse.rollups(start_minute, end_minute)], ignore_index=True)
    inputs = Inputs(
        archive=snapshot.counts,
        warehouse=warehouse_counts,
        speed=speed_counts,
        rollups=rollups,
        watermarks=marks,
        event_ids=LayerEventIds(archive, layers.warehouse),
        sequences=layers.warehouse.sequences(start_minute - SEQUENCE_MARGIN_MIN, end_minute + SEQUENCE_MARGIN_MIN),
        start_minute=start_minute,
        end_minute=end_minute,
    )
    return inputs, snapshot


def config_from(settings: Settings) -> Config:
    return Config(lateness_s=settings.allowed_lateness_s,
                  tolerance=Tolerance(settings.reconcile_tolerance_abs, settings.reconcile_tolerance_rel))


@dataclass
class Run:
    result: Result
    info: RunInfo
    inputs: Inputs
    snapshot: ArchiveSnapshot
    report_path: Path | None


def run_reconcile(settings: Settings, layers: Layers, start: dt.datetime, end: dt.datetime,
                  who: str | None = None, run_id: str | None = None, write: bool = True) -> Run:
    """Reconcile ``[start, end)``, write the report under ``$TALLY_HOME/reports`` and to S3."""
    start_minute, end_minute = minute_of(start), minute_of(end)
    if end_minute <= start_minute:
        raise ValueError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    inputs, snapshot = collect(layers, start_minute, end_minute, settings.allowed_lateness_s)
    result = reconcile(inputs, config_from(settings))
    now = dt.datetime.now(UTC)
    info = RunInfo(start_minute, end_minute, now,
                   run_id or f"reconcile-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}", who or getpass.getuser())
    path = write_report(result, info, settings.home / "reports", layers.s3, layers.bucket) if write else None
    return Run(result, info, inputs, snapshot, path)
