"""The warehouse's freshness SLA, one global policy: ``warehouse/raw_events`` and every dbt mart must be
materialized at least once per ``TALLY_FRESHNESS_WAREHOUSE_S`` (the hourly build keeps them well inside
it; a schedule that stopped or builds that keep failing make them stale, and one alert is sent). The
stream's, the speed layer's and the archive's SLAs are on their progress assets
(:mod:`assets.reconciliation.progress`), reported from their position clocks."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from assets.reconciliation.progress import freshness_policy
from assets.warehouse.keys import RAW_EVENTS_KEY

def is_warehouse(spec: dg.AssetSpec) -> bool:
    """raw_events and the marts (dbt's models/marts folder)."""
    return spec.key == RAW_EVENTS_KEY or spec.group_name == "marts"


def with_warehouse_freshness(defs: dg.Definitions, sla_s: int) -> dg.Definitions:
    """``defs`` (the warehouse and dbt domains) with the warehouse SLA on raw_events and the marts."""
    policy = freshness_policy(dt.timedelta(seconds=sla_s))
    return defs.map_asset_specs(
        func=lambda spec: spec.replace_attributes(freshness_policy=policy) if is_warehouse(spec) else spec)
