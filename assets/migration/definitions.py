"""What the migration domain adds to the Definitions root (which merges :func:`defs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets.migration.assets import migration_job, parallel_run_report
from assets.migration.resources import MigrationSettings
from assets.migration.schedules import build_schedule

if TYPE_CHECKING:
    from orchestration.environment import Environment


def defs(environment: Environment) -> dg.Definitions:
    """The parallel-run report asset, its job, schedule and settings (the shared resources come from the
    root), for the root's :class:`orchestration.environment.Environment`."""
    settings = environment.settings
    migration = MigrationSettings(config_path=settings.migration_config, tolerance=settings.migration_tolerance,
                                  ready_days=settings.migration_ready_days)
    return dg.Definitions(assets=[parallel_run_report], jobs=[migration_job],
                          schedules=[build_schedule(settings.migration_config is not None)],
                          resources={"migration": migration})
