"""The layer-progress sensor: reports each layer's progress asset when its clock advances within its SLA
(see :mod:`assets.reconciliation.progress`)."""


import datetime as dt
import json
from typing import Any

import dagster as dg

from assets.reconciliation.keys import LAYER_KEYS
from assets.reconciliation.progress import advanced, read_clocks


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reports a layer's progress asset when its clock advances within its SLA (freshness).")
def layer_progress_sensor(context: dg.SensorEvaluationContext, s3: dg.ResourceParam[Any], redis: dg.ResourceParam[Any],
                          warehouse: dg.ResourceParam[Any], reconcile: dg.ResourceParam[Any]) -> dg.SensorResult:
    previous: dict[str, float] = json.loads(context.cursor or "{}")
    current = read_clocks(s3, redis, warehouse, reconcile)
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    moved = advanced(previous, current, reconcile.freshness_slas(), now)
    events = [dg.AssetMaterialization(asset_key=LAYER_KEYS[layer], metadata={
        "clock": dt.datetime.fromtimestamp(mark, tz=dt.timezone.utc).isoformat(),
        "lag_s": round(now - mark, 1),
    }) for layer, mark in sorted(moved.items())]
    return dg.SensorResult(asset_events=events, cursor=json.dumps({**previous, **moved}, sort_keys=True))
