"""The batch layer's entry points for commands and the demo: run the archiver, build the marts.

``build_marts`` runs the same jobs the schedule and the UI run (``raw_events_job`` over each stretch of
consecutive hours as one single-run backfill, then ``dbt_build_job``), recorded in the Dagster instance
under ``DAGSTER_HOME`` when it is set, so the runs show in the UI.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from assets.warehouse.partitions import hour_key
from streaming.settings import Settings


@dataclass(frozen=True)
class BuildReport:
    hours: int
    runs: list[str]
    success: bool


def archiver_worker(settings: Settings, worker_id: str = "") -> object:
    """A lease worker (group "archiver") whose processors write the archive."""
    from streaming.archive.processor import GROUP, FlushPolicy, processor_factory
    from streaming.archive.store import ArchiveStore
    from streaming.events import EventDecoder
    from streaming.kinesis.worker import Worker
    from orchestration.environment import resolve_endpoints

    from streaming.privacy.suppression import SuppressionCache
    from streaming.speed.connect import connect

    endpoints = resolve_endpoints(settings)
    store = ArchiveStore(endpoints.client("s3", settings.aws_region), settings.bucket)
    redis_client = connect(endpoints.redis_url)  # the suppression list (privacy): checked per batch
    policy = FlushPolicy(settings.archive_max_records, settings.archive_max_bytes, settings.archive_flush_s)
    decoder = EventDecoder(settings.max_event_bytes, settings.max_future_skew_s)
    return Worker(
        endpoints.client("kinesis", settings.aws_region), endpoints.client("dynamodb", settings.aws_region),
        settings.stream_name, settings.lease_table, GROUP,
        processor_factory(store, decoder, policy, lambda: SuppressionCache(redis_client, settings.privacy_salt)),
        worker_id=worker_id,
    )


def run_archiver(settings: Settings, until_caught_up: bool = True, timeout_s: float = 600.0,
                 stop: threading.Event | None = None) -> None:
    """Archive the stream: to its current end (then flush and exit), or until ``stop`` is set.

    Running on, it waits out services that are down, at start as mid-run
    (:func:`streaming.outages.keep_running`: a log line with the fix, retries with backoff); the archive
    is its own checkpoint, so a worker built again resumes after the last committed batch."""
    from streaming.outages import keep_running
    from streaming.speed.run import default_worker_id

    if until_caught_up:
        archiver_worker(settings).run_until_caught_up(timeout_s)  # type: ignore[attr-defined]
        return
    from streaming.metrics import serve_for

    serve_for("archiver", settings)
    stop = stop or threading.Event()
    worker_id = default_worker_id()

    def attempt() -> None:
        archiver_worker(settings, worker_id).run(stop)  # type: ignore[attr-defined]

    from orchestration.environment import locate_endpoints

    keep_running(attempt, stop, f"archiver {worker_id}", settings, locate=locate_endpoints)


def ensure_dagster_home(home: Path) -> Path:
    """A Dagster home with tally's ``dagster.yaml`` (as ``make dagster-home`` makes it)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text((Path(__file__).parent / "dagster.yaml").read_text())
    return home


def _instance() -> dg.DagsterInstance:
    home = os.environ.get("DAGSTER_HOME")
    if home:
        ensure_dagster_home(Path(home))
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def stretches(hours: list[dt.datetime]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Consecutive hours grouped into (first, last) ranges."""
    out: list[list[dt.datetime]] = []
    for hour in sorted(set(hours)):
        if out and hour - out[-1][1] == dt.timedelta(hours=1):
            out[-1][1] = hour
        else:
            out.append([hour, hour])
    return [(a, b) for a, b in out]


def build_marts(first: dt.datetime | None = None, last: dt.datetime | None = None,
                defs: dg.Definitions | None = None) -> BuildReport:
    """Load the archive's hours in [first, last] (default: every hour with archive objects) and dbt build."""
    from orchestration.definitions import build_definitions

    defs = defs or build_definitions()
    instance = _instance()
    if first is None or last is None:
        store = defs.resources["s3"].archive_store()  # type: ignore[index,union-attr]
        hours = [h for h in store.hours_with_objects()
                 if (first is None or h >= first) and (last is None or h <= last)]
    else:
        hours = [first + dt.timedelta(hours=i) for i in range(int((last - first).total_seconds() // 3600) + 1)]
    runs: list[str] = []
    ok = True
    load = defs.resolve_job_def("raw_events_job")
    for a, b in stretches(hours):
        result = load.execute_in_process(instance=instance, raise_on_error=False, tags={
            "dagster/asset_partition_range_start": hour_key(a), "dagster/asset_partition_range_end": hour_key(b),
        })
        runs.append(result.run_id)
        ok = ok and result.success
    if ok:
        result = defs.resolve_job_def("dbt_build_job").execute_in_process(instance=instance, raise_on_error=False)
        runs.append(result.run_id)
        ok = result.success
    return BuildReport(len(hours), runs, ok)
