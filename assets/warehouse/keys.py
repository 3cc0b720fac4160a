"""The warehouse domain's asset key, the one place it is spelled."""

import dagster as dg

RAW_EVENTS_KEY = dg.AssetKey(["warehouse", "raw_events"])
