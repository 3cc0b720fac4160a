"""The parallel-run report's schedule: yesterday's partition, once its hours were reconciled and the legacy
pipeline (which runs behind) has counted them."""


import datetime as dt

import dagster as dg

from assets.migration.assets import migration_job

#: 02:30 UTC: the last hour of the day is reconciled at about :16 past 00:00; the legacy runs up to ~2 h late.
CRON = "30 2 * * *"


def build_schedule(configured: bool) -> dg.ScheduleDefinition:
    """Runs by default; skips (saying why) while TALLY_MIGRATION_CONFIG is unset, as there is nothing to compare."""

    @dg.schedule(job=migration_job, cron_schedule=CRON, execution_timezone="UTC", name="migration_daily_schedule",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="At 02:30 UTC, the parallel-run report of the previous day (TALLY_MIGRATION_CONFIG).")
    def migration_daily_schedule(context: dg.ScheduleEvaluationContext) -> "dg.RunRequest | dg.SkipReason":
        if not configured:
            return dg.SkipReason("TALLY_MIGRATION_CONFIG is not set: there is no legacy pipeline to compare with")
        when = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
        day = (when.astimezone(dt.timezone.utc) - dt.timedelta(days=1)).date().isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return migration_daily_schedule
