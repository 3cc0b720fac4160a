"""Checks of the raw tables against the archive manifests (the archiver's own counts)."""


import datetime as dt
from collections import Counter
from typing import Any

import dagster as dg

from assets.warehouse.keys import RAW_EVENTS_KEY
from assets.warehouse.partitions import hourly, partition_hour
from assets.warehouse.resources import WarehouseResource


def _run_hours(context: dg.AssetCheckExecutionContext) -> list[dt.datetime] | None:
    """The hours the run loaded (from its partition tags); None if the run was not partitioned."""
    tags = context.run.tags
    if "dagster/partition" in tags:
        return [partition_hour(tags["dagster/partition"])]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        return [partition_hour(k) for k in hourly.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))]
    return None


@dg.asset_check(asset=RAW_EVENTS_KEY, name="raw_events_match_manifests", blocking=True,
                description="Per tenant × event type × minute and per dead-letter reason, the raw tables hold "
                            "exactly what the committed archive manifests say the loaded hours contain.")
def raw_events_match_manifests(context: dg.AssetCheckExecutionContext, s3: dg.ResourceParam[Any],
                               warehouse: WarehouseResource) -> dg.AssetCheckResult:
    store = s3.archive_store()
    hours, rows, dead_rows = warehouse.raw_counts(_run_hours(context))
    loaded = Counter({(t, e, m): n for t, e, m, n in rows})
    loaded_dead = Counter({r: n for r, n in dead_rows})
    expected: Counter[tuple[str, str, str]] = Counter()
    expected_dead: Counter[str] = Counter()
    for hour in hours:
        for obj in store.committed_objects(hour):
            for t, e, m, n in obj.entry["counts"]:
                expected[(t, e, m)] += n
            for t, e, m, n in obj.entry.get("forgotten", []):  # left out of the object for privacy
                expected[(t, e, m)] -= n
            expected_dead.update(obj.entry["dead_letters"])
    expected = +expected  # drop cells whose every event was forgotten
    diff = {f"{t}|{e}|{m}": loaded.get((t, e, m), 0) - expected.get((t, e, m), 0)
            for (t, e, m) in set(expected) | set(loaded) if loaded.get((t, e, m), 0) != expected.get((t, e, m), 0)}
    dead_diff = {r: loaded_dead.get(r, 0) - expected_dead.get(r, 0) for r in set(expected_dead) | set(loaded_dead)
                 if loaded_dead.get(r, 0) != expected_dead.get(r, 0)}
    return dg.AssetCheckResult(
        passed=not diff and not dead_diff,
        metadata={
            "hours": len(hours),
            "events_in_manifests": sum(expected.values()),
            "events_loaded": sum(loaded.values()),
            "dead_letters_in_manifests": sum(expected_dead.values()),
            "dead_letters_loaded": sum(loaded_dead.values()),
            "mismatched_windows": len(diff),
            "first_mismatches": dict(sorted(diff.items())[:20]),
            "dead_letter_mismatches": dead_diff,
        },
    )
