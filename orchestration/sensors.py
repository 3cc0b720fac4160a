"""Sensors: re-build hours whose archive objects arrived late, and observe the layers Dagster does not
run (the archive, the Redis counters)."""


import json
from typing import Any

import dagster as dg

from assets.ingest.keys import ARCHIVE_KEY
from assets.speed_layer.keys import REDIS_COUNTERS_KEY
from assets.warehouse.keys import RAW_EVENTS_KEY
from assets.warehouse.partitions import hour_key, hourly, partition_hour
from orchestration.jobs import batch_hourly_job


def late_hours(store: Any, cursor: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Read manifests committed since ``cursor`` ({shard: last manifest key seen}); return the new cursor
    and {partition key: newest manifest key} of every hour they wrote objects to."""
    cursor = dict(cursor)
    touched: dict[str, str] = {}
    for shard in store.shard_ids():
        for key in store.manifest_keys(shard, start_after=cursor.get(shard)):
            manifest = store.read_manifest(key)
            if manifest is not None:
                for obj in manifest["objects"]:
                    touched[hour_key(partition_hour(obj["hour"][:13].replace("T", "-") + ":00"))] = key
            cursor[shard] = key
    return cursor, touched


@dg.sensor(job=batch_hourly_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts a run for every already-built hour that received archive objects since it was built.")
def late_archive_sensor(context: dg.SensorEvaluationContext, s3: dg.ResourceParam[Any]) -> dg.SensorResult:
    cursor, touched = late_hours(s3.archive_store(), json.loads(context.cursor or "{}"))
    built = context.instance.get_materialized_partitions(RAW_EVENTS_KEY)
    valid = set(hourly.get_partition_keys())
    requests = [
        dg.RunRequest(partition_key=pk, run_key=f"late:{pk}:{manifest}", tags={"tally/reason": "late-archive-objects"})
        for pk, manifest in sorted(touched.items()) if pk in built and pk in valid
    ]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


@dg.sensor(minimum_interval_seconds=120, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Records observations of the archive (manifests per shard) and of the speed layer's Redis.")
def external_layers_observer(context: dg.SensorEvaluationContext, s3: dg.ResourceParam[Any],
                             redis: dg.ResourceParam[Any]) -> dg.SensorResult:
    events: list[dg.AssetObservation] = []
    store = s3.archive_store()
    shards = store.shard_ids()
    events.append(dg.AssetObservation(asset_key=ARCHIVE_KEY, metadata={
        "shards": len(shards),
        "manifests": sum(len(store.manifest_keys(s)) for s in shards),
    }))
    info = redis.client().info()
    keys = sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
    events.append(dg.AssetObservation(asset_key=REDIS_COUNTERS_KEY, metadata={
        "keys": keys, "used_memory": info.get("used_memory_human", ""),
    }))
    return dg.SensorResult(asset_events=events)


SENSORS = [late_archive_sensor, external_layers_observer]
