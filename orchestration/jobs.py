"""Jobs: the hourly batch build (one hour of raw events, then the dbt models) and a dbt-only build."""

from __future__ import annotations

import dagster as dg

from assets.warehouse.keys import RAW_EVENTS_KEY
from assets.warehouse.partitions import hourly

#: Every dbt node (models and the seeds generated from the segment rules).
DBT_SELECTION = (
    dg.AssetSelection.assets(RAW_EVENTS_KEY).downstream(include_self=False) | dg.AssetSelection.groups("reference")
) - dg.AssetSelection.groups("reconciliation", "migration")  # each runs on its own schedule, for closed hours/days

#: raw_events for the run's hour(s), then the dbt build (models, seeds, tests as checks).
batch_hourly_job = dg.define_asset_job(
    "batch_hourly_job",
    selection=dg.AssetSelection.assets(RAW_EVENTS_KEY) | DBT_SELECTION,
    partitions_def=hourly,
    description="Load the partition's hour(s) of archive objects, then dbt build the models.",
)

#: Only load hours of raw events (a backfill of many ranges, then one dbt_build_job).
raw_events_job = dg.define_asset_job(
    "raw_events_job",
    selection=dg.AssetSelection.assets(RAW_EVENTS_KEY),
    partitions_def=hourly,
    description="Load the partition's hour(s) of archive objects into the raw tables (no dbt).",
)

#: Rebuild the dbt models from what the raw tables hold (no loading).
dbt_build_job = dg.define_asset_job(
    "dbt_build_job",
    selection=DBT_SELECTION,
    description="dbt build of every model, seed and test.",
)

JOBS = [batch_hourly_job, raw_events_job, dbt_build_job]
