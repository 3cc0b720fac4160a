"""Reconcile a time range of the real layers: read them, judge, report (what the CLI and Dagster call).

This is the thin shell around the pure core: it builds the three count tables from S3, DuckDB and
Redis, the positions (:mod:`streaming.reconcile.positions`: each stream reader's position per shard and
the stream records after the lower one, which give the layers' clocks and the held cells), the cells
the warehouse has not loaded or built yet, the drill-down source and the sequence evidence.

The layers are read in an order that keeps every difference explainable: the warehouse first (it only
loads committed archive objects, so the archive read after it holds at least what it holds; its reads
are repeated until a load or build does not commit in between), then the archive's manifests, then the
speed layer's checkpoints *before* its counters (Redis applies before it checkpoints, so the counters
hold at least what the checkpoints say), then the stream after the lower position of each shard.
"""

from __future__ import annotations

import datetime as dt
import getpass
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from streaming.kinesis.leases import SHARD_END, Lease, LeaseTable
from streaming.reconcile.engine import reconcile
from streaming.reconcile.model import HELD_CELL_COLUMNS, Config, Inputs, Result, Tolerance, Watermarks
from streaming.reconcile.positions import LayerPosition, PositionsView, ShardPositions, judge_positions
from streaming.reconcile.report import RunInfo, write_report
from streaming.reconcile.sequences import HELD_COLUMNS, SEQUENCE_MARGIN_MIN
from streaming.reconcile.sources.archive import ArchiveReader, ArchiveSnapshot
from streaming.reconcile.sources.speed import SpeedReader
from streaming.reconcile.sources.stream import StreamTailReader
from streaming.endpoints import Endpoints
from streaming.settings import Settings
from streaming.warehouse.base import Warehouse
from streaming.warehouse.factory import warehouse_for

SPEED_GROUP = "speed"
ARCHIVE_GROUP = "archiver"
#: A load committing while the warehouse is read makes its reads disagree: read again, this many times.
_WAREHOUSE_READ_ATTEMPTS = 5
UTC = dt.timezone.utc


@dataclass
class Layers:
    """Clients of the real layers. ``dynamodb`` may be None: the speed watermark then falls back to
    the archive's (only safe when the consumer is known to be caught up)."""

    s3: Any
    bucket: str
    redis: Any
    warehouse: Warehouse  # streaming.warehouse: the DuckDB or the Snowflake adapter
    dynamodb: Any | None = None
    lease_table: str | None = None
    stream_name: str | None = None
    speed_group: str = SPEED_GROUP
    #: Kinesis: without it the stream between the layers' positions is not read, and the recorded
    #: positions (arrival times, tips) stand in for it.
    kinesis: Any | None = None
    max_stream_read: int = 2_000_000

    @classmethod
    def from_settings(cls, settings: Settings, endpoints: Endpoints | None = None) -> Layers:
        """``endpoints`` as the caller resolved them (the CLI: with the local stack's record); None: the
        settings' variables."""
        from streaming.aws import aws_client
        from streaming.endpoints import from_variables
        from streaming.speed.connect import connect

        endpoints = endpoints or from_variables(settings)
        return cls(
            s3=aws_client("s3", settings.aws_region, endpoints.aws_url("s3")),
            bucket=settings.bucket,
            redis=connect(endpoints.redis_url),
            warehouse=warehouse_for(settings),
            dynamodb=aws_client("dynamodb", settings.aws_region, endpoints.aws_url("dynamodb")),
            lease_table=settings.lease_table,
            stream_name=settings.stream_name,
            kinesis=aws_client("kinesis", settings.aws_region, endpoints.aws_url("kinesis")),
            max_stream_read=settings.reconcile_max_stream_read,
        )


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


@dataclass
class _WarehouseView:
    counts: pd.DataFrame
    rollups: pd.DataFrame
    sequences: pd.DataFrame
    loaded: set[str]
    unbuilt: pd.DataFrame
    dead_letters: pd.DataFrame
    grains: set[tuple[str, str]]


def _read_warehouse(warehouse: Any, start_minute: int, end_minute: int, lateness_s: int) -> _WarehouseView:
    """Every warehouse read of a run, between two equal fingerprints (no load or build committed)."""
    lo, hi = start_minute - SEQUENCE_MARGIN_MIN, end_minute + SEQUENCE_MARGIN_MIN
    for _ in range(_WAREHOUSE_READ_ATTEMPTS):
        before = warehouse.fingerprint()
        view = _WarehouseView(
            counts=warehouse.counts(start_minute, end_minute, lateness_s),
            rollups=warehouse.rollups(start_minute, end_minute),
            sequences=warehouse.sequences(lo, hi),
            loaded=warehouse.loaded_keys(start_minute, end_minute),
            unbuilt=warehouse.unbuilt(start_minute, end_minute),
            dead_letters=warehouse.dead_letter_numbers(lo, hi),
            grains=warehouse.rollup_grains(),
        )
        if warehouse.fingerprint() == before:
            return view
    raise RuntimeError(f"the warehouse changed during each of {_WAREHOUSE_READ_ATTEMPTS} reads (a load or dbt "
                       "build committing): reconcile again when it is idle")


def _warehouse_held(snapshot: ArchiveSnapshot, view: _WarehouseView) -> pd.DataFrame:
    """Cells the warehouse has not read yet: archive objects it has not loaded, rows dbt has not built."""
    rows = [(t, e, m, "warehouse has not loaded " + ", ".join(
                f"{n} archive object{'s' if n > 1 else ''} of hour {hour}" for hour, n in sorted(hours.items())))
            for (t, e, m), hours in snapshot.unloaded.items()]
    rows += [(r.tenant_id, r.event_type, int(r.minute), f"marts not rebuilt since rows were loaded at {r.loaded_at}")
             for r in view.unbuilt.itertuples()]
    return pd.DataFrame(rows, columns=list(HELD_CELL_COLUMNS))


def _dead_letter_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """HELD_COLUMNS of the numbers dead letters hold: no event id, no minute of their own (a number
    held only by a dead letter fills a hole; it is no bracket's end)."""
    n = len(frame)
    return frame.assign(event_id=pd.Series([None] * n, dtype="object", index=frame.index),
                        minute=pd.Series([pd.NA] * n, dtype="Int64", index=frame.index))[list(HELD_COLUMNS)]


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Row-wise concatenation that skips empty frames (pandas warns about their dtypes otherwise)."""
    kept = [f for f in frames if len(f)]
    return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=columns)


def _leases(layers: Layers, group: str) -> dict[str, Lease]:
    if layers.dynamodb is None or not layers.lease_table or not layers.stream_name:
        return {}
    return LeaseTable(layers.dynamodb, layers.lease_table, group, layers.stream_name).leases()


def _layer_position(lease: Lease | None, seq: int | None = None) -> LayerPosition:
    if lease is not None and lease.checkpoint == SHARD_END:
        return LayerPosition(ended=True, recorded=lease.position)
    if seq is None and lease is not None and lease.checkpoint is not None:
        seq = int(lease.checkpoint)
    return LayerPosition(seq, recorded=lease.position if lease is not None else None)


def consumers_behind(layers: Layers, after: float) -> list[str]:
    """The (layer, shard) pairs whose recorded position is not at the tip as seen by a poll that started
    at or after ``after`` (e.g. the last record sent): empty once both consumers have read everything."""
    shard_ids = StreamTailReader(layers.kinesis, layers.stream_name).shard_ids()
    behind = []
    for group, name in ((layers.speed_group, "speed layer"), (ARCHIVE_GROUP, "archive")):
        leases = _leases(layers, group)
        for shard_id in shard_ids:
            lease = leases.get(shard_id)
            position = lease.position if lease is not None else None
            if lease is not None and lease.checkpoint == SHARD_END:
                continue
            if position is None or not position.at_tip or (position.observed_at or 0.0) < after:
                behind.append(f"{name} on {shard_id}")
    return behind


def read_positions(layers: Layers, snapshot: ArchiveSnapshot, speed_leases: dict[str, Lease] | None) -> PositionsView:
    """Each shard's speed and archive positions and the stream after the lower one (see positions)."""
    archive_seq = snapshot.positions()
    archive_leases = _leases(layers, ARCHIVE_GROUP)
    reader = StreamTailReader(layers.kinesis, layers.stream_name, max_records=layers.max_stream_read) \
        if layers.kinesis is not None and layers.stream_name else None
    shard_ids = set(archive_seq) | set(speed_leases or {}) | set(archive_leases)
    if reader is not None:
        shard_ids |= set(reader.shard_ids())
    shards = []
    for shard_id in sorted(shard_ids):
        archive_lease = archive_leases.get(shard_id)
        archive = _layer_position(archive_lease, archive_seq.get(shard_id))
        if archive_lease is not None and archive_lease.checkpoint not in (SHARD_END, None) \
                and archive.seq is not None and int(archive_lease.checkpoint) != archive.seq:
            archive = LayerPosition(archive.seq)  # the lease describes another position than the snapshot's
        # Without a lease table the speed layer is taken to be where the archive is (the old assumption:
        # only safe when its consumer is known to be caught up).
        speed = archive if speed_leases is None else _layer_position(speed_leases.get(shard_id))
        shards.append(ShardPositions(shard_id, speed, archive))
    tails = reader.tails({s.shard_id: s.lower() for s in shards}) if reader is not None else {}
    return judge_positions(shards, tails)


def collect(layers: Layers, start_minute: int, end_minute: int,
            lateness_s: int) -> tuple[Inputs, ArchiveSnapshot, PositionsView]:
    """Read the three layers for ``[start_minute, end_minute)`` into the core's inputs (order: see above)."""
    # The archive's bucket answers first: with AWS unreachable that is what to fix, before the warehouse.
    layers.s3.head_bucket(Bucket=layers.bucket)
    view = _read_warehouse(layers.warehouse, start_minute, end_minute, lateness_s)
    archive = ArchiveReader(layers.s3, layers.bucket)
    snapshot = archive.snapshot(start_minute, end_minute, loaded=view.loaded)
    speed_leases = _leases(layers, layers.speed_group) if layers.dynamodb is not None else None
    speed = SpeedReader(layers.redis)
    speed_counts = speed.counts(start_minute, end_minute)
    positions = read_positions(layers, snapshot, speed_leases)
    clock_a, clock_s = positions.clocks["archive"], positions.clocks["speed layer"]
    marks = Watermarks(archive=clock_a, warehouse=clock_a, speed=clock_s)
    tenants = sorted(set(speed_counts["tenant_id"]) | set(snapshot.counts["tenant_id"])
                     | set(view.counts["tenant_id"]))
    rollups = pd.concat([speed.rollups(tenants, start_minute, end_minute), view.rollups], ignore_index=True)
    inputs = Inputs(
        archive=snapshot.counts,
        warehouse=view.counts,
        speed=speed_counts,
        rollups=rollups,
        rollup_grains={("speed", "hour"), ("speed", "day"), *view.grains},
        watermarks=marks,
        event_ids=LayerEventIds(archive, layers.warehouse),
        sequences=view.sequences,
        held=_concat([positions.held, _warehouse_held(snapshot, view)], list(HELD_CELL_COLUMNS)),
        numbers=_concat([positions.numbers, _dead_letter_numbers(view.dead_letters)], list(HELD_COLUMNS)),
        unbounded=positions.unbounded,
        start_minute=start_minute,
        end_minute=end_minute,
    )
    return inputs, snapshot, positions


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
    positions: PositionsView | None = None


def run_reconcile(settings: Settings, layers: Layers, start: dt.datetime, end: dt.datetime,
                  who: str | None = None, run_id: str | None = None, write: bool = True) -> Run:
    """Reconcile ``[start, end)``, write the report under ``$TALLY_HOME/reports`` and to S3."""
    start_minute, end_minute = minute_of(start), minute_of(end)
    if end_minute <= start_minute:
        raise ValueError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    inputs, snapshot, positions = collect(layers, start_minute, end_minute, settings.allowed_lateness_s)
    result = reconcile(inputs, config_from(settings))
    now = dt.datetime.now(UTC)
    info = RunInfo(start_minute, end_minute, now,
                   run_id or f"reconcile-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}", who or getpass.getuser())
    path = write_report(result, info, settings.home / "reports", layers.s3, layers.bucket) if write else None
    return Run(result, info, inputs, snapshot, path, positions)
