"""What the dbt domain adds to the Definitions root: the dbt models (manifest prepared once for the
environment's profile) and the ``dbt`` resource."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets.dbt.assets import build_dbt_assets
from assets.dbt.project import build_dbt_project
from assets.dbt.resources import build_dbt_resource, dbt_executable

if TYPE_CHECKING:
    from orchestration.environment import Environment


def defs(environment: Environment) -> dg.Definitions:
    settings = environment.settings
    # dbt runs against the warehouse resource's file (assets/dbt/assets.py); parse for that profile.
    profile_env = {"TALLY_DUCKDB_PATH": str(settings.duckdb_path.resolve())} if environment.is_local else None
    project = build_dbt_project(environment.dbt_project_dir, dbt_executable(), environment.dbt_target, profile_env)
    return dg.Definitions(assets=[build_dbt_assets(project)],
                          resources={"dbt": build_dbt_resource(project, environment.dbt_target)})
