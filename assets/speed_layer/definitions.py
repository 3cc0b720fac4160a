"""What the speed-layer domain adds to the Definitions root: its Redis counters (built outside Dagster)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets.speed_layer.assets import redis_counters

if TYPE_CHECKING:
    from orchestration.environment import Environment


def defs(environment: Environment) -> dg.Definitions:
    return dg.Definitions(assets=[redis_counters])
