"""What the warehouse domain adds to the Definitions root: the raw tables and their check. (Its
``warehouse`` resource is shared by several domains: :func:`orchestration.resources.build_resources`
builds it with :func:`assets.warehouse.resources.build_warehouse`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets.warehouse.assets import raw_events
from assets.warehouse.checks import raw_events_match_manifests

if TYPE_CHECKING:
    from orchestration.environment import Environment


def defs(environment: Environment) -> dg.Definitions:
    return dg.Definitions(assets=[raw_events], asset_checks=[raw_events_match_manifests])
