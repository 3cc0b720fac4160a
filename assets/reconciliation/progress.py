"""Layer progress: one asset per layer whose materializations are reported only when that layer's
event-time watermark advances, with a freshness policy on each.

A stalled speed consumer or archiver (or a batch build that stopped) stops advancing its watermark: its
progress asset goes stale in the UI, while reconciliation reports its windows as pending, not as loss.
"""


import datetime as dt
import json
from typing import Any

import dagster as dg

from assets.ingest.assets import ARCHIVE_KEY
from assets.speed_layer.assets import REDIS_COUNTERS_KEY

LAYER_KEYS = {
    "archive": dg.AssetKey(["reconciliation", "archive_progress"]),
    "warehouse": dg.AssetKey(["reconciliation", "warehouse_progress"]),
    "speed": dg.AssetKey(["reconciliation", "speed_progress"]),
}
# The warehouse's progress asset has no lineage edge: an asset downstream of raw_events would join the
# batch layer's `raw_events+` job selection, and this one is only ever reported, never materialized.
_UPSTREAM = {"archive": [ARCHIVE_KEY], "warehouse": [], "speed": [REDIS_COUNTERS_KEY]}


def progress_specs(warn_after: dt.timedelta, fail_after: dt.timedelta) -> list[dg.AssetSpec]:
    policy = dg.FreshnessPolicy.time_window(fail_window=fail_after, warn_window=warn_after)
    return [
        dg.AssetSpec(key=key, deps=_UPSTREAM[layer], group_name="reconciliation", kinds={"python"},
                     freshness_policy=policy,
                     description=f"The {layer} layer's event-time watermark; reported only when it advances, "
                                 f"so a stalled {layer} layer shows up as stale.")
        for layer, key in LAYER_KEYS.items()
    ]


def read_watermarks(s3: Any, redis: Any, warehouse: Any, reconcile: Any) -> dict[str, float | None]:
    from streaming.kinesis.leases import LeaseTable
    from streaming.reconcile.sources.archive import ArchiveReader
    from streaming.reconcile.sources.speed import speed_watermark

    layers = reconcile.layers(s3, redis, warehouse)
    snapshot = ArchiveReader(layers.s3, layers.bucket).snapshot(0, 0)
    leases = LeaseTable(layers.dynamodb, layers.lease_table, layers.speed_group, layers.stream_name).leases()
    return {"archive": snapshot.watermark, "warehouse": layers.warehouse.watermark(),
            "speed": speed_watermark(leases, snapshot.shards)}


def advanced(previous: dict[str, float], current: dict[str, float | None]) -> dict[str, float]:
    """The layers whose watermark moved forward since the cursor."""
    return {layer: mark for layer, mark in current.items()
            if mark is not None and mark > previous.get(layer, float("-inf"))}


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Reports a layer's progress asset when its event-time watermark advances (freshness).")
def layer_progress_sensor(context: dg.SensorEvaluationContext, s3: dg.ResourceParam[Any], redis: dg.ResourceParam[Any],
                          warehouse: dg.ResourceParam[Any], reconcile: dg.ResourceParam[Any]) -> dg.SensorResult:
    previous: dict[str, float] = json.loads(context.cursor or "{}")
    current = read_watermarks(s3, redis, warehouse, reconcile)
    moved = advanced(previous, current)
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    events = [dg.AssetMaterialization(asset_key=LAYER_KEYS[layer], metadata={
        "watermark": dt.datetime.fromtimestamp(mark, tz=dt.timezone.utc).isoformat(),
        "lag_s": round(now - mark, 1),
    }) for layer, mark in sorted(moved.items())]
    return dg.SensorResult(asset_events=events, cursor=json.dumps({**previous, **moved}, sort_keys=True))
