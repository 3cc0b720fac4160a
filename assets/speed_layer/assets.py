"""The speed layer's Redis counters: built outside Dagster by the speed-layer consumer from the same
stream, shown here so the lineage graph has both layers; observed by a sensor (key count, memory)."""

from __future__ import annotations

import dagster as dg

from assets.ingest.keys import STREAM_KEY
from assets.speed_layer.keys import REDIS_COUNTERS_KEY

redis_counters = dg.AssetSpec(
    key=REDIS_COUNTERS_KEY,
    deps=[STREAM_KEY],
    group_name="speed_layer",
    description="Real-time counters, uniques and segments in Redis, kept by the speed-layer consumer.",
    kinds={"redis"},
)

