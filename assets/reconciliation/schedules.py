"""When each hour is reconciled."""

import dagster as dg

from assets.reconciliation.jobs import reconciliation_job


def build_schedule(allowed_lateness_s: int, archive_flush_s: int) -> dg.ScheduleDefinition:
    """Reconcile each hour once it is closed: after the lateness, the archiver's flush and the batch build."""
    minute = min(59, -(-(allowed_lateness_s + archive_flush_s) // 60) + 10)
    return dg.build_schedule_from_partitioned_job(
        reconciliation_job, name="reconciliation_hourly_schedule", minute_of_hour=minute,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"At :{minute:02d} past each hour, reconcile the previous hour (closed windows only: "
                    f"lateness {allowed_lateness_s}s + archiver flush {archive_flush_s}s + 10 min for the batch build).",
    )
