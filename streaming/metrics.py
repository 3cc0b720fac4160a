"""tally's Prometheus metrics: every metric name in one place, and one ``/metrics`` port per process.

Each long-running process asks for its component's metrics (:func:`worker`, :func:`speed`,
:func:`archiver`, :func:`query`, :func:`collector`) and calls :func:`serve` once; a process exports only
the metrics of the components it runs (plus prometheus-client's ``process_*`` and ``python_*``). Names
follow Prometheus conventions: ``tally_`` prefix, ``_total`` for counters, base units (``_seconds``,
``_bytes``). Everything is counted per batch or per call, never per event (the speed layer's per-event
cost is frozen). The README's "Operating tally" section lists every name; ``orchestration/alerts/`` holds
the rules over them.

Labels: ``group`` (the consumer group: ``speed``, ``archiver``), ``shard``, ``reason`` (a dead-letter
reason code), ``route`` and ``status`` (HTTP). Never a tenant, a user or any other unbounded value.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from streaming.settings import Settings

log = logging.getLogger(__name__)

#: Default ``/metrics`` ports per component when ``TALLY_METRICS_PORT`` is unset. The query API serves
#: ``/metrics`` on its own HTTP port instead.
DEFAULT_PORTS = {"speed": 9464, "archiver": 9465, "collector": 9466}

#: Batch durations: a speed-layer batch commits in milliseconds, an archive batch in up to seconds.
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class WorkerMetrics:
    """The lease worker's, per consumer group and shard (both the speed consumer and the archiver)."""

    records_read: Counter
    behind_latest: Gauge
    position_arrival: Gauge
    at_tip: Gauge
    polled: Gauge
    checkpoints: Counter
    leases: Gauge
    getrecords_errors: Counter
    batch_failures: Counter


@dataclass(frozen=True)
class SpeedMetrics:
    events_applied: Counter
    events_skipped: Counter
    dead_letters: Counter
    apply_seconds: Histogram
    redis_errors: Counter
    redis_retries: Counter


@dataclass(frozen=True)
class ArchiverMetrics:
    records: Counter
    objects: Counter
    bytes: Counter
    dead_letters: Counter
    commit_seconds: Histogram


@dataclass(frozen=True)
class QueryMetrics:
    requests: Counter
    duration: Histogram


@dataclass(frozen=True)
class CollectorMetrics:
    """The collector's (streaming/collector/): what it accepted, its spool and the drainer's position."""

    requests: Counter
    events: Counter
    spool_bytes: Gauge
    spool_capacity_bytes: Gauge
    drained_records: Counter
    put_errors: Counter
    forwarded: Counter
    forward_failures: Counter
    forward_rejected: Counter
    forward_dropped: Counter
    forward_bytes: Gauge
    forward_lag: Gauge


def _dead_letters() -> Counter:
    return Counter("tally_dead_letters_total", "Records that failed validation, by consumer group and reason code "
                   "(counted when their batch committed)", ["group", "reason"])


# One instance of each family per process (prometheus-client refuses to register a name twice); the
# dead-letter counter is shared by the speed layer and the archiver.
_shared_dead_letters = functools.cache(_dead_letters)


@functools.cache
def worker() -> WorkerMetrics:
    labels = ["group", "shard"]
    return WorkerMetrics(
        records_read=Counter("tally_stream_records_read_total", "Stream records the lease worker handed to its "
                             "processor and the processor took (counted once per processed page)", labels),
        behind_latest=Gauge("tally_shard_behind_latest_seconds", "Kinesis MillisBehindLatest of the shard's last "
                            "processed page, in seconds", labels),
        position_arrival=Gauge("tally_shard_position_arrival_timestamp_seconds", "Arrival time (Unix seconds) of "
                               "the last checkpointed record: the group's position on the shard", labels),
        at_tip=Gauge("tally_shard_at_tip", "1 when the shard's last poll found its tip with everything read "
                     "committed, else 0", labels),
        polled=Gauge("tally_shard_polled_timestamp_seconds", "When (Unix seconds) the worker last polled the shard "
                     "or offered its records again: a live worker does so at least every few seconds", labels),
        checkpoints=Counter("tally_shard_checkpoints_total", "Checkpoints written (the position moved)", labels),
        leases=Gauge("tally_shard_leases", "Shards this worker holds the lease of", ["group"]),
        getrecords_errors=Counter("tally_getrecords_errors_total", "GetRecords calls that failed after botocore's "
                                  "retries (throttling, service or connection errors)", labels),
        batch_failures=Counter("tally_batch_failures_total", "Batches whose processing raised (the sink failed): "
                               "kept and offered again, the checkpoint not moved", labels),
    )


@functools.cache
def speed() -> SpeedMetrics:
    return SpeedMetrics(
        events_applied=Counter("tally_speed_events_applied_total", "Events applied to the Redis counters for the "
                               "first time", ["group"]),
        events_skipped=Counter("tally_speed_events_skipped_total", "Events not applied again: covered by a "
                               "shard's applied marker (a replay) or seen inside the dedup horizon", ["group"]),
        dead_letters=_shared_dead_letters(),
        apply_seconds=Histogram("tally_speed_apply_seconds", "Time to commit one batch to Redis (every tenant's "
                                "script call and the dead letters)", ["group"], buckets=_BATCH_BUCKETS),
        redis_errors=Counter("tally_redis_errors_total", "Redis errors met while applying batches, by exception "
                             "class", ["group", "error"]),
        redis_retries=Counter("tally_redis_retries_total", "Times a batch was sent to Redis again after an error",
                              ["group"]),
    )


@functools.cache
def archiver() -> ArchiverMetrics:
    return ArchiverMetrics(
        records=Counter("tally_archive_records_total", "Records committed to the archive (valid or not)", ["shard"]),
        objects=Counter("tally_archive_objects_total", "Archive objects committed (S3 raw/events)", ["shard"]),
        bytes=Counter("tally_archive_bytes_total", "Compressed bytes of the committed archive objects", ["shard"]),
        dead_letters=_shared_dead_letters(),
        commit_seconds=Histogram("tally_archive_commit_seconds", "Time to build and commit one archive batch "
                                 "(objects, then its manifest)", buckets=_BATCH_BUCKETS),
    )


@functools.cache
def query() -> QueryMetrics:
    return QueryMetrics(
        requests=Counter("tally_http_requests_total", "Query API requests by route template and status",
                         ["route", "status"]),
        duration=Histogram("tally_http_request_duration_seconds", "Query API request duration by route template",
                           ["route"]),
    )


@functools.cache
def collector() -> CollectorMetrics:
    return CollectorMetrics(
        requests=Counter("tally_collector_requests_total", "Tracking API requests by status code", ["status"]),
        events=Counter("tally_collector_events_total", "Messages by outcome: spooled (fsynced to the spool, then "
                       "forwarded by the drainer), rejected (dead-lettered with a reason); refused counts requests "
                       "answered 503 (spool full)", ["outcome"]),
        spool_bytes=Gauge("tally_collector_spool_bytes", "Bytes of the write-ahead spool not yet drained"),
        spool_capacity_bytes=Gauge("tally_collector_spool_capacity_bytes", "The spool's limit: past it, 503"),
        drained_records=Counter("tally_collector_spool_drained_records_total", "Spooled records the drainer "
                                "forwarded to Kinesis (its position in the spool)"),
        put_errors=Counter("tally_collector_put_errors_total", "PutRecords calls or records that failed "
                           "(the records went to the spool or were retried)"),
        forwarded=Counter("tally_collector_forward_requests_total", "Accepted requests the legacy collector "
                          "(TALLY_COLLECTOR_FORWARD_URL) acknowledged with a 2xx"),
        forward_failures=Counter("tally_collector_forward_failures_total", "Forward attempts that failed and are "
                                 "retried (connection refused, timeout, 5xx, 408, 429)"),
        forward_rejected=Counter("tally_collector_forward_rejected_total", "Forwarded requests the legacy collector "
                                 "refused for good (another 4xx): not retried"),
        forward_dropped=Counter("tally_collector_forward_dropped_total", "Accepted requests not kept for the legacy "
                                "collector because the forward spool was full"),
        forward_bytes=Gauge("tally_collector_forward_spool_bytes", "Bytes of the forward spool not yet forwarded"),
        forward_lag=Gauge("tally_collector_forward_lag_seconds", "How long the oldest request not yet forwarded "
                          "has waited (0 = nothing waits)"),
    )


def serve(component: str, port: int | None, host: str = "127.0.0.1") -> int | None:
    """Start the ``/metrics`` endpoint of this process (once; a background thread): ``port`` None means
    the component's default, 0 a free port. Returns the port, or None if it could not bind (logged: the
    process still runs, and Prometheus's ``up == 0`` shows the missing target)."""
    return _serve(component, DEFAULT_PORTS.get(component, 0) if port is None else port, host)


@functools.cache
def _serve(component: str, port: int, host: str) -> int | None:
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        log.error("metrics endpoint not started: %s:%d cannot be bound (%s); set TALLY_METRICS_PORT to a free port",
                  host, port, exc.strerror or exc, extra={"component": component, "port": port})
        return None
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, bound, extra={"component": component, "port": bound})
    return bound


def serve_for(component: str, settings: Settings) -> int | None:
    """:func:`serve` as the settings say (``TALLY_METRICS_PORT``, ``TALLY_METRICS_HOST``; ``off``: None)."""
    if settings.metrics_off:
        return None
    return serve(component, settings.metrics_port, settings.metrics_host)
