"""Reconciliation assets per hourly partition of ``received_at``.

``reconciliation/hourly_verdicts`` reads the archive manifests, the warehouse and Redis for the hour,
writes the report (Markdown in the asset's metadata, HTML under ``$TALLY_HOME/reports`` and in S3
``reports/``) and records the verdict counts; the checks in :mod:`checks` judge them. Downstream,
``published_report`` copies the report to ``reports/published/`` and ``speed_heal`` heals Redis: both
wait for the blocking check that the batch layers (archive, warehouse) agree, so neither publishes nor
heals from incomplete batch truth.
"""


import datetime as dt
from typing import Any

import dagster as dg

from assets.ingest.keys import ARCHIVE_KEY
from assets.reconciliation.checks import latest_metadata
from assets.reconciliation.keys import FCT_EVENTS_KEY, GROUP, HEAL_KEY, PUBLISHED_KEY, VERDICTS_KEY
from assets.speed_layer.keys import REDIS_COUNTERS_KEY
from assets.warehouse.keys import RAW_EVENTS_KEY
from assets.warehouse.partitions import hourly, partition_hour


def _reconcile(context: dg.AssetExecutionContext, s3: Any, redis: Any, warehouse: Any, reconcile: Any) -> Any:
    from streaming.reconcile.service import run_reconcile

    start = partition_hour(context.partition_key)
    layers = reconcile.layers(s3, redis, warehouse)
    settings = reconcile.settings(s3.bucket, warehouse)
    return run_reconcile(settings, layers, start, start + dt.timedelta(hours=1), who=f"dagster run {context.run_id[:8]}",
                         run_id=f"{context.partition_key.replace(':', '')}-{context.run_id[:8]}"), layers, settings


@dg.asset(
    key=VERDICTS_KEY,
    deps=[ARCHIVE_KEY, RAW_EVENTS_KEY, FCT_EVENTS_KEY, REDIS_COUNTERS_KEY],
    partitions_def=hourly,
    group_name=GROUP,
    kinds={"duckdb", "redis", "s3"},
    description="Archive manifests × warehouse × Redis per tenant × event type × minute of the hour: "
                "verdicts, the exact missing event_ids, source-sequence gaps; the report in the metadata.",
)
def hourly_verdicts(context: dg.AssetExecutionContext, s3: dg.ResourceParam[Any], redis: dg.ResourceParam[Any],
                    warehouse: dg.ResourceParam[Any], reconcile: dg.ResourceParam[Any]) -> dg.MaterializeResult:
    from streaming.reconcile.report import summary_json, to_markdown

    run, _, _ = _reconcile(context, s3, redis, warehouse, reconcile)
    result = run.result
    marks = run.inputs.watermarks
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(to_markdown(result, run.info, str(run.report_path))),
        "report_path": dg.MetadataValue.path(str(run.report_path)),
        "report_s3_key": f"reports/{run.info.run_id}.html",
        "summary": dg.MetadataValue.json(summary_json(result, run.info)),
        "unexplained_loss": result.unexplained_loss,
        **{f"cells_{k}": int(v) for k, v in result.summary.items()},
        "missing_event_ids": len(result.event_ids),
        "watermark_archive": _iso(marks.archive), "watermark_warehouse": _iso(marks.warehouse),
        "watermark_speed": _iso(marks.speed),
    })


def _iso(epoch: float | None) -> str:
    return "—" if epoch is None else dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat()


@dg.asset(key=PUBLISHED_KEY, deps=[VERDICTS_KEY], partitions_def=hourly, group_name=GROUP, kinds={"s3"},
          description="The hour's reconciliation report, published to S3 reports/published/ only once the "
                      "batch layers agree (blocked by the check batch_layers_agree).")
def published_report(context: dg.AssetExecutionContext, s3: dg.ResourceParam[Any]) -> dg.MaterializeResult:
    metadata = latest_metadata(context.instance, VERDICTS_KEY, context.partition_key)
    source = str(metadata["report_s3_key"].value)
    target = f"reports/published/{context.partition_key.replace(':', '')}.html"
    client = s3.get_client()
    client.copy_object(Bucket=s3.bucket, Key=target, CopySource={"Bucket": s3.bucket, "Key": source})
    return dg.MaterializeResult(metadata={"published": target, "from": source})


@dg.asset(key=HEAL_KEY, deps=[VERDICTS_KEY], partitions_def=hourly, group_name=GROUP, kinds={"redis"},
          description="Overwrites the hour's closed Redis minute counters (and their roll-ups), unique visitors, "
                      "top pages and segments that differ from complete batch truth; every heal recorded "
                      "(who, when, cells, old and new values).")
def speed_heal(context: dg.AssetExecutionContext, s3: dg.ResourceParam[Any], redis: dg.ResourceParam[Any],
               warehouse: dg.ResourceParam[Any], reconcile: dg.ResourceParam[Any]) -> dg.MaterializeResult:
    from streaming.reconcile.heal import heal
    from streaming.segments import load_rules
    from streaming.speed.store import Retention

    # Reconcile again: Redis may have moved since the verdicts were taken (the heal is a compare-and-set).
    run, layers, settings = _reconcile(context, s3, redis, warehouse, reconcile)
    record = heal(layers.redis, run.result, who=f"dagster run {context.run_id[:8]}",
                  reports_dir=settings.home / "reports", run_id=run.info.run_id,
                  retention=Retention.from_settings(settings), warehouse=layers.warehouse,
                  window=(run.info.start_minute, run.info.end_minute), rules=load_rules())
    rows = ["| tenant | event type | minute | old | new | status |", "|---|---|---|---|---|---|"]
    for c in record.cells[:100]:
        minute = dt.datetime.fromtimestamp(c.minute * 60, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        rows.append(f"| {c.tenant_id} | {c.event_type} | {minute} | {c.old} | {c.new} | {c.status} |")
    return dg.MaterializeResult(metadata={
        "heal_id": record.heal_id, "healed_cells": record.healed, "skipped_cells": record.skipped,
        "healed_structures": sum(1 for i in record.items if i.status == "healed"),
        "cells": dg.MetadataValue.md("\n".join(rows) if record.cells else "_nothing to heal_"),
    })
