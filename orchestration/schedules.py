"""Build each hour once its allowed lateness (plus the archiver's flush interval) has passed."""

from __future__ import annotations

import dagster as dg

from orchestration.environment import Environment
from orchestration.jobs import batch_hourly_job


def build_schedules(environment: Environment) -> list[dg.ScheduleDefinition]:
    settings = environment.settings
    delay_s = settings.allowed_lateness_s + settings.archive_flush_s
    minute = min(59, -(-delay_s // 60))
    schedule = dg.build_schedule_from_partitioned_job(
        batch_hourly_job,
        name="batch_hourly_schedule",
        minute_of_hour=minute,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"At :{minute:02d} past each hour, build the previous hour (allowed lateness "
                    f"{settings.allowed_lateness_s}s + archiver flush {settings.archive_flush_s}s).",
    )
    return [schedule]
