"""Session fixtures: generated runs pushed through the real layers once, copied per test where a test
damages them (bucket, DuckDB file); the speed layer is re-run per test into a flushed Redis."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.aws import aws_client
from streaming.generator import GeneratedRecord, GeneratorConfig, Ledger, TrafficGenerator
from streaming.reconcile.service import Layers, Run, run_reconcile
from streaming.warehouse.duckdb import DuckDBWarehouse
from streaming.resources import ensure_bucket, ensure_lease_table, ensure_stream
from streaming.settings import Settings, load_settings
from tests.reconcile import pipeline

REGION = "us-east-1"
START = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.timezone.utc)
WINDOW = (START - dt.timedelta(hours=1), START + dt.timedelta(hours=2))

#: 09:50-10:06: the windows of hour 09 close (watermark 10:06 minus 5 minutes of lateness), so hour 09's
#: roll-ups are judged too; the last minutes stay pending.
CLEAN = GeneratorConfig(seed=3, tenants=5, start="2026-01-05T09:50:00Z", duration_s=1000, rate_per_s=5.0,
                        duplicate_rate=0.02, malformed_rate=0.01)
CLEAN_START_MINUTE = CLEAN.start_ms // 60_000


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Clients:
    kinesis: Any
    s3: Any
    dynamodb: Any


@dataclass
class PipelineRun:
    """A generated run that went through the stream, the archiver, the loader and dbt."""

    settings: Settings
    ledger: Ledger
    records: list[GeneratedRecord]


@pytest.fixture(scope="session")
def clients(aws_endpoint: str) -> Clients:
    return Clients(aws_client("kinesis", REGION, aws_endpoint), aws_client("s3", REGION, aws_endpoint),
                   aws_client("dynamodb", REGION, aws_endpoint))


def new_settings(aws_endpoint: str, redis_url: str, home: Path) -> Settings:
    return load_settings({
        "TALLY_ENV": "local", "TALLY_HOME": str(home / "tally_home"), "TALLY_AWS_ENDPOINT_URL": aws_endpoint,
        "TALLY_REDIS_URL": redis_url, "TALLY_STREAM_NAME": _name("stream"), "TALLY_BUCKET": _name("bucket"),
        "TALLY_LEASE_TABLE": _name("leases"), "TALLY_DUCKDB_PATH": str(home / "warehouse.duckdb"),
    })


def prepare(settings: Settings, clients: Clients) -> None:
    ensure_stream(clients.kinesis, settings.stream_name, 2)
    ensure_bucket(clients.s3, settings.bucket, REGION)
    ensure_lease_table(clients.dynamodb, settings.lease_table)


def batch_layer(run_settings: Settings, clients: Clients, home: Path, rollups: bool = False) -> None:
    """Archive, load and build ``fct_events`` (and with ``rollups`` the minute/hour/day count marts)."""
    pipeline.run_archiver(run_settings, clients.kinesis, clients.dynamodb, clients.s3)
    pipeline.load_warehouse(run_settings, clients.s3)
    pipeline.run_dbt(run_settings, home, "+fct_event_counts_day" if rollups else "+fct_events")


def generated(config: GeneratorConfig) -> tuple[list[GeneratedRecord], Ledger]:
    generator = TrafficGenerator(config)
    records = list(generator.records())
    return records, generator.ledger


def pipeline_run(config: GeneratorConfig, home: Path, aws_endpoint: str, redis_url: str,
                 clients: Clients) -> PipelineRun:
    settings = new_settings(aws_endpoint, redis_url, home)
    prepare(settings, clients)
    records, ledger = generated(config)
    pipeline.send(clients.kinesis, settings.stream_name, records)
    batch_layer(settings, clients, home, rollups=True)
    return PipelineRun(settings, ledger, records)


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory: pytest.TempPathFactory, aws_endpoint: str, redis_url: str,
              clients: Clients) -> PipelineRun:
    return pipeline_run(CLEAN, tmp_path_factory.mktemp("clean-run"), aws_endpoint, redis_url, clients)


@pytest.fixture
def speed_lease_table(clients: Clients) -> str:
    """The speed consumer's own lease table for one test (its checkpoints are the speed watermark)."""
    name = _name("speed-leases")
    ensure_lease_table(clients.dynamodb, name)
    return name


@pytest.fixture
def run_settings(clean_run: PipelineRun, tmp_path: Path, speed_lease_table: str, redis_client: redis.Redis) -> Settings:
    """The clean run's settings for one test: a copy of its warehouse, a flushed Redis, fresh speed leases."""
    return pipeline.clone(clean_run.settings, tmp_path, lease_table=speed_lease_table)


def layers_for(settings: Settings, client: redis.Redis, clients: Clients) -> Layers:
    return Layers(s3=clients.s3, bucket=settings.bucket, redis=client, warehouse=DuckDBWarehouse(settings.duckdb_path),
                  dynamodb=clients.dynamodb, lease_table=settings.lease_table, stream_name=settings.stream_name,
                  kinesis=clients.kinesis)


def reconcile_run(settings: Settings, client: redis.Redis, clients: Clients) -> Run:
    return run_reconcile(settings, layers_for(settings, client, clients), *WINDOW, who="pytest")


@pytest.fixture
def speed(run_settings: Settings, redis_client: redis.Redis, clients: Clients) -> Iterator[Any]:
    """Run the real speed consumer over the run's stream (optionally skipping records)."""

    def run(skip: Any = None, settings: Settings | None = None, stall_at: Any = None) -> None:
        pipeline.run_speed(settings or run_settings, clients.kinesis, clients.dynamodb, redis_client, skip=skip,
                           stall_at=stall_at)

    yield run


def with_bucket(settings: Settings, clients: Clients) -> Settings:
    """A copy of the run's archive in a new bucket (for tests that delete objects)."""
    bucket = _name("bucket")
    ensure_bucket(clients.s3, bucket, REGION)
    pipeline.copy_bucket(clients.s3, settings.bucket, bucket)
    return replace(settings, bucket=bucket)
