"""The speed-layer domain's asset key, the one place it is spelled."""

import dagster as dg

REDIS_COUNTERS_KEY = dg.AssetKey(["speed_layer", "redis_counters"])
