"""Test helpers for the Dagster + dbt pipeline: archive a generated run into the test's bucket, run the
real jobs in process, read the marts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import dagster as dg
import duckdb

from assets.warehouse.partitions import hour_key
from streaming.archive.processor import ArchiveProcessor, FlushPolicy
from streaming.archive.store import ArchiveStore
from streaming.aws import aws_client
from streaming.events import EventDecoder
from streaming.generator import GeneratedRecord
from streaming.resources import ensure_bucket, ensure_stream

from tests.batch.streams import drive, send


class Pipeline:
    """One test's stream, bucket, warehouse and Dagster instance, from the ``tally_env`` fixture."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        endpoint = env["TALLY_AWS_ENDPOINT_URL"]
        self.kinesis = aws_client("kinesis", "us-east-1", endpoint)
        self.s3 = aws_client("s3", "us-east-1", endpoint)
        ensure_stream(self.kinesis, env["TALLY_STREAM_NAME"], 2)
        ensure_bucket(self.s3, env["TALLY_BUCKET"], "us-east-1")
        self.store = ArchiveStore(self.s3, env["TALLY_BUCKET"])
        self.instance = dg.DagsterInstance.ephemeral()
        from orchestration.definitions import build_definitions

        self.defs = build_definitions()

    def send_and_archive(self, records: Iterable[GeneratedRecord]) -> int:
        n = send(self.kinesis, self.env["TALLY_STREAM_NAME"], records)
        drive(self.kinesis, self.env["TALLY_STREAM_NAME"],
              lambda: ArchiveProcessor(self.store, EventDecoder(), FlushPolicy(max_records=400)))
        return n

    def build_range(self, first: dt.datetime, last: dt.datetime, job_name: str = "batch_hourly_job") -> dg.ExecuteInProcessResult:
        """A partitioned job over a range of hours in one run, as a single-run backfill launches it."""
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(instance=self.instance, tags={
            "dagster/asset_partition_range_start": hour_key(first),
            "dagster/asset_partition_range_end": hour_key(last),
        })

    def load_hours(self, hours: list[dt.datetime]) -> list[dg.ExecuteInProcessResult]:
        """raw_events_job, one range run per stretch of consecutive hours (rejected records sit in their
        arrival hour, far from the generated traffic's hours)."""
        hours = sorted(hours)
        runs: list[list[dt.datetime]] = []
        for hour in hours:
            if runs and hour - runs[-1][-1] == dt.timedelta(hours=1):
                runs[-1].append(hour)
            else:
                runs.append([hour])
        return [self.build_range(r[0], r[-1], "raw_events_job") for r in runs]

    def dbt_build(self) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def("dbt_build_job").execute_in_process(instance=self.instance)

    def build_partition(self, key: str) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def("batch_hourly_job").execute_in_process(instance=self.instance, partition_key=key)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(self.env["TALLY_DUCKDB_PATH"], read_only=True) as conn:
            return conn.execute(sql, params or []).fetchall()
