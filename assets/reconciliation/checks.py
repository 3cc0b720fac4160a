"""Checks on each hour's verdicts. They read the verdict counts the asset recorded for the partition
(no SQL here); ``batch_layers_agree`` is blocking, so nothing downstream publishes bad numbers."""


from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets.reconciliation.keys import VERDICTS_KEY
from assets.warehouse.partitions import hourly

BATCH = ("archive_missing", "warehouse_missing", "warehouse_extra")
SPEED = ("speed_missing", "speed_extra")
UPSTREAM = ("upstream_gap", "upstream_duplicate")


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> Mapping[str, Any]:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]),
                                              limit=1).records
    if not records or records[0].asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has no materialization for partition {partition}")
    return records[0].asset_materialization.metadata


def _counts(metadata: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, int]:
    return {n: int(metadata[f"cells_{n}"].value) for n in names}


def _result(context: dg.AssetCheckExecutionContext, names: tuple[str, ...], what: str,
            severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    metadata = latest_metadata(context.instance, VERDICTS_KEY, context.partition_key)
    counts = _counts(metadata, names)
    bad = {k: v for k, v in counts.items() if v}
    return dg.AssetCheckResult(
        passed=not bad, severity=severity,
        description=(f"{what}: " + ", ".join(f"{k}={v}" for k, v in bad.items())) if bad else f"{what}: none",
        metadata={**counts, "partition": context.partition_key, "report_path": metadata["report_path"]},
    )


@dg.asset_check(asset=VERDICTS_KEY, name="batch_layers_agree", blocking=True, partitions_def=hourly,
                description="No closed cell of the hour has archive_missing, warehouse_missing or warehouse_extra.")
def batch_layers_agree(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return _result(context, BATCH, "batch-layer loss", dg.AssetCheckSeverity.ERROR)


@dg.asset_check(asset=VERDICTS_KEY, name="speed_layer_agrees", partitions_def=hourly,
                description="No closed cell of the hour has speed_missing or speed_extra (speed_heal repairs them).")
def speed_layer_agrees(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return _result(context, SPEED, "speed-layer differences", dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset=VERDICTS_KEY, name="no_upstream_loss", partitions_def=hourly,
                description="No source_seq gap (loss before the stream) or conflicting repeat in the hour.")
def no_upstream_loss(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return _result(context, UPSTREAM, "loss before the stream", dg.AssetCheckSeverity.WARN)


CHECKS = [batch_layers_agree, speed_layer_agrees, no_upstream_loss]
