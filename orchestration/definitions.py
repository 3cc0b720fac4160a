"""The Definitions root: only assembles what each domain returns and adds the global parts.

Built when Dagster loads the code location (``defs`` is a lazy ``@definitions`` function), never at
import: the environment is read then.
"""

from __future__ import annotations

import dagster as dg

from assets.dbt import assets as dbt_domain
from assets.dbt.project import build_dbt_project
from assets.ingest import assets as ingest_domain
from assets.ingest.assets import StreamConfig
from assets.migration import definitions as migration_domain
from assets.privacy import jobs as privacy_domain
from assets.reconciliation import definitions as reconciliation_domain
from assets.speed_layer import assets as speed_domain
from assets.warehouse import assets as warehouse_domain
from orchestration import alerting
from orchestration.environment import DBT_PROJECT_DIR, get_environment
from orchestration.freshness import with_warehouse_freshness
from orchestration.jobs import JOBS
from orchestration.resources import build_resources, dbt_executable
from orchestration.schedules import build_schedules
from orchestration.sensors import SENSORS


def build_definitions() -> dg.Definitions:
    environment = get_environment()
    settings = environment.settings
    # dbt runs against the warehouse resource's file (assets/dbt/assets.py); parse for that profile.
    profile_env = {"TALLY_DUCKDB_PATH": str(settings.duckdb_path.resolve())} if environment.is_local else None
    project = build_dbt_project(DBT_PROJECT_DIR, dbt_executable(), environment.dbt_target, profile_env)
    resources = {
        **build_resources(environment, project),
        "stream": StreamConfig(stream_name=settings.stream_name, region=settings.aws_region,
                               endpoint_url=environment.aws_endpoint("kinesis"), tally_local=environment.is_local),
    }
    return dg.Definitions.merge(
        ingest_domain.defs(),
        with_warehouse_freshness(dg.Definitions.merge(warehouse_domain.defs(), dbt_domain.defs(project)),
                                 settings.freshness_warehouse_s),
        speed_domain.defs(),
        reconciliation_domain.defs(environment),
        migration_domain.defs(environment),
        privacy_domain.defs(),
        dg.Definitions(jobs=JOBS, schedules=build_schedules(environment), sensors=[*SENSORS, *alerting.SENSORS],
                       resources=resources),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
