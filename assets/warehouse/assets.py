"""`warehouse/raw_events`: one hour of committed archive objects in the warehouse's raw tables.

Re-materializing an hour replaces exactly that hour (delete + insert in one transaction); a backfill
over a range runs as one run that loads every hour of the range in one transaction.
"""


from typing import Any

import dagster as dg

from assets.ingest.keys import ARCHIVE_KEY
from assets.warehouse.keys import RAW_EVENTS_KEY
from assets.warehouse.partitions import hourly, partition_hour
from assets.warehouse.resources import WarehouseResource


@dg.asset(
    key=RAW_EVENTS_KEY,
    deps=[ARCHIVE_KEY],
    partitions_def=hourly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="warehouse_raw",
    kinds={"duckdb", "snowflake"},
    description="raw.events (valid records) and raw.dead_letters, loaded from committed archive objects by hour.",
)
def raw_events(context: dg.AssetExecutionContext, s3: dg.ResourceParam[Any], warehouse: WarehouseResource) -> dg.MaterializeResult:
    hours = [partition_hour(k) for k in context.partition_keys]
    result = warehouse.load_hours(s3.archive_store(), hours)
    context.log.info(f"loaded {result.events} events and {result.dead_letters} dead letters from "
                     f"{result.objects} archive objects for {len(hours)} hour(s)")
    return dg.MaterializeResult(metadata={
        "hours": result.hours,
        "archive_objects": result.objects,
        "events": result.events,
        "dead_letters": result.dead_letters,
        "manifest_records": result.manifest_records,
    })
