"""The Definitions root: only merges what each domain's ``defs(environment)`` returns and adds the
global parts (the shared resources, the batch jobs, schedules and sensors, alerting, the warehouse's
freshness policy).

Built when Dagster loads the code location (``defs`` is a lazy ``@definitions`` function), never at
import: the environment is read then, once.
"""

from __future__ import annotations

import dagster as dg

from assets.dbt import definitions as dbt_domain
from assets.ingest import definitions as ingest_domain
from assets.migration import definitions as migration_domain
from assets.privacy import definitions as privacy_domain
from assets.reconciliation import definitions as reconciliation_domain
from assets.speed_layer import definitions as speed_domain
from assets.warehouse import definitions as warehouse_domain
from orchestration import alerting
from orchestration.environment import get_environment
from orchestration.freshness import with_warehouse_freshness
from orchestration.jobs import JOBS
from orchestration.resources import build_resources
from orchestration.schedules import build_schedules
from orchestration.sensors import SENSORS


def build_definitions() -> dg.Definitions:
    environment = get_environment()
    batch = dg.Definitions.merge(warehouse_domain.defs(environment), dbt_domain.defs(environment))
    return dg.Definitions.merge(
        ingest_domain.defs(environment),
        with_warehouse_freshness(batch, environment.settings.freshness_warehouse_s),
        speed_domain.defs(environment),
        reconciliation_domain.defs(environment),
        migration_domain.defs(environment),
        privacy_domain.defs(environment),
        dg.Definitions(jobs=JOBS, schedules=build_schedules(environment), sensors=[*SENSORS, *alerting.SENSORS],
                       resources=build_resources(environment)),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
