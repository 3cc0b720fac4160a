"""``migration/parallel_run_report``: per day (daily partitions of ``received_at``), tally against the legacy
pipeline (TALLY_MIGRATION_CONFIG) over the TALLY_MIGRATION_READY_DAYS days ending with it: the report in
the metadata (Markdown), HTML/JSON/Markdown under ``$TALLY_HOME/reports``, and the cutover verdict."""


import dataclasses
import datetime as dt
from typing import Any

import dagster as dg

from assets.migration.resources import MigrationSettings
from assets.migration.keys import GROUP, REPORT_KEY
from assets.reconciliation.keys import VERDICTS_KEY

FIRST_DAY = "2026-01-01"

daily = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")


@dg.asset(
    key=REPORT_KEY,
    deps=[VERDICTS_KEY],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"postgres", "duckdb"},
    description="The legacy pipeline's counts (its database or exports) against tally's warehouse per tenant × "
                "event type × hour, judged only where tally's own layers reconcile; the legacy's losses with "
                "the event_ids tally has; the cutover verdict over TALLY_MIGRATION_READY_DAYS days.",
)
def parallel_run_report(context: dg.AssetExecutionContext, s3: dg.ResourceParam[Any], redis: dg.ResourceParam[Any],
                        warehouse: dg.ResourceParam[Any], reconcile: dg.ResourceParam[Any],
                        migration: MigrationSettings) -> dg.MaterializeResult:
    from streaming.migration.report import markdown, report_json, write_report
    from streaming.migration.service import build_report, legacy_source
    settings = dataclasses.replace(reconcile.settings(s3.bucket, warehouse), migration_config=migration.config_path,
                                   migration_tolerance=migration.tolerance, migration_ready_days=migration.ready_days)
    layers = reconcile.layers(s3, redis, warehouse)
    day = dt.date.fromisoformat(context.partition_key)
    report = build_report(settings, layers, legacy_source(settings, layers.s3), day, settings.migration_ready_days)
    paths = write_report(report, settings.home / "reports")
    today = report.days[-1]
    doc = report_json(report)
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(markdown(report)),
        "report_path": dg.MetadataValue.path(str(paths["html"])),
        "cutover_ready": report.cutover.ready,
        "cutover_reason": report.cutover.reason,
        "consecutive_good_days": report.cutover.consecutive_good_days,
        "day_good": today.good,
        "day_reason": today.reason,
        "tally_events": doc["days"][-1]["tally"],
        "legacy_events": doc["days"][-1]["legacy"],
        "legacy_missing_cells": int((report.day_cells(today.day)["verdict"] == "legacy_missing").sum())
        if len(report.cells) else 0,
    })


migration_job = dg.define_asset_job("migration_daily_job", selection=dg.AssetSelection.assets(REPORT_KEY),
                                    partitions_def=daily,
                                    description="The parallel-run report of the partition's day.")
