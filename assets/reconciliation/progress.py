"""Layer progress: one asset per layer, reported only when that layer's clock advances, each with its
freshness SLA as a Dagster ``FreshnessPolicy`` (the 1.11+ API; Dagster's freshness daemon evaluates it).

A layer's clock is how far it has read: for the speed layer and the archive, their *positions*
(:func:`streaming.reconcile.service.read_positions`: the arrival time of the first record after a layer's
position, or the read time at the tip — the clocks reconciliation closes windows by); for the stream, when
it last received a record; for the warehouse, the newest ``received_at`` it has loaded. The sensor reports
a layer's progress asset when its clock moved *and* is within the layer's SLA of now, so a layer that
stopped (a stalled archiver: its clock stops at its first unread record) or lags by more than its SLA
gets no report and goes stale (FAIL) one SLA later; ``orchestration/alerting.py`` sends one alert for it.
"""


import dataclasses
import datetime as dt
from typing import Any

import dagster as dg

from assets.ingest.keys import ARCHIVE_KEY, STREAM_KEY
from assets.reconciliation.keys import LAYER_KEYS
from assets.speed_layer.keys import REDIS_COUNTERS_KEY

# The warehouse's progress asset has no lineage edge: an asset downstream of raw_events would join the
# batch layer's `raw_events+` job selection, and this one is only ever reported, never materialized.
_UPSTREAM = {"stream": [STREAM_KEY], "archive": [ARCHIVE_KEY], "warehouse": [], "speed": [REDIS_COUNTERS_KEY]}
_WHAT = {"stream": "when the stream last received a record",
         "archive": "the archive's position clock (how far it has committed the stream)",
         "warehouse": "the newest received_at the warehouse has loaded",
         "speed": "the speed layer's position clock (how far it has applied the stream)"}
#: The sensor reads at most this many stream records after the lower position (a lagging layer's clock
#: is the arrival of its first unread record, which comes first).
_SENSOR_STREAM_READ = 20_000


def freshness_policy(sla: dt.timedelta) -> dg.FreshnessPolicy:
    """Stale (FAIL) after one SLA without a report, WARN after half of it (Dagster's windows are at least
    a minute: the settings refuse SLAs under 60 s, and a 1-2 minute SLA has no warning)."""
    warn = sla / 2 if sla / 2 >= dt.timedelta(minutes=1) else None
    return dg.FreshnessPolicy.time_window(fail_window=sla, warn_window=warn)


def progress_specs(slas: dict[str, dt.timedelta]) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(key=key, deps=_UPSTREAM[layer], group_name="reconciliation", kinds={"python"},
                     freshness_policy=freshness_policy(slas[layer]),
                     description=f"{_WHAT[layer].capitalize()}; reported when it advances and is within the "
                                 f"{layer} SLA ({int(slas[layer].total_seconds())} s) of now, so a stalled or "
                                 f"lagging {layer} layer shows up as stale.")
        for layer, key in LAYER_KEYS.items()
    ]


def read_clocks(s3: Any, redis: Any, warehouse: Any, reconcile: Any) -> dict[str, float | None]:
    """Each layer's clock (epoch seconds; None: nothing read yet)."""
    from streaming.kinesis.leases import LeaseTable
    from streaming.reconcile.service import read_positions
    from streaming.reconcile.sources.archive import ArchiveReader

    layers = dataclasses.replace(reconcile.layers(s3, redis, warehouse), max_stream_read=_SENSOR_STREAM_READ)
    snapshot = ArchiveReader(layers.s3, layers.bucket).snapshot(0, 0)
    leases = LeaseTable(layers.dynamodb, layers.lease_table, layers.speed_group, layers.stream_name).leases()
    view = read_positions(layers, snapshot, leases)
    return {"stream": view.newest_arrival, "archive": view.clocks["archive"],
            "warehouse": layers.warehouse.watermark(), "speed": view.clocks["speed layer"]}


def advanced(previous: dict[str, float], current: dict[str, float | None],
             slas: dict[str, float] | None = None, now: float | None = None) -> dict[str, float]:
    """The layers whose clock moved forward since the cursor (and, given ``slas``, is within its SLA)."""
    now = dt.datetime.now(dt.timezone.utc).timestamp() if now is None else now
    return {layer: mark for layer, mark in current.items()
            if mark is not None and mark > previous.get(layer, float("-inf"))
            and (slas is None or now - mark <= slas.get(layer, float("inf")))}
