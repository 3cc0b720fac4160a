"""The reconciliation domain's asset keys and group, the one place they are spelled."""

import dagster as dg

GROUP = "reconciliation"
VERDICTS_KEY = dg.AssetKey(["reconciliation", "hourly_verdicts"])
PUBLISHED_KEY = dg.AssetKey(["reconciliation", "published_report"])
HEAL_KEY = dg.AssetKey(["reconciliation", "speed_heal"])
#: Each layer's progress asset (reported by the layer_progress_sensor).
LAYER_KEYS = {
    "stream": dg.AssetKey(["reconciliation", "stream_progress"]),
    "archive": dg.AssetKey(["reconciliation", "archive_progress"]),
    "warehouse": dg.AssetKey(["reconciliation", "warehouse_progress"]),
    "speed": dg.AssetKey(["reconciliation", "speed_progress"]),
}
#: The dbt mart the verdicts read (its key comes from dbt's metadata: assets/dbt/translator.py).
FCT_EVENTS_KEY = dg.AssetKey(["marts", "fct_events"])
