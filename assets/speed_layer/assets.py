"""The speed layer's Redis counters: built outside Dagster by the speed-layer consumer from the same
stream, shown here so the lineage graph has both layers; observed by a sensor (key count, memory)."""

from __future__ import annotations

import dagster as dg

from assets.ingest.assets import STREAM_KEY

REDIS_COUNTERS_KEY = dg.AssetKey(["speed_layer", "redis_counters"])

redis_counters = dg.AssetSpec(
    key=REDIS_COUNTERS_KEY,
    deps=[STREAM_KEY],
    group_name="speed_layer",
    description="Real-time counters, uniques and segments in Redis, kept by the speed-layer consumer.",
    kinds={"redis"},
)


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[redis_counters])
