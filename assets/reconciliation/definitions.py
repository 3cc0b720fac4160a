"""What the reconciliation domain adds to the Definitions root (which merges :func:`defs`)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from assets.reconciliation.assets import hourly_verdicts, published_report, speed_heal
from assets.reconciliation.checks import CHECKS
from assets.reconciliation.jobs import reconciliation_job
from assets.reconciliation.progress import progress_specs
from assets.reconciliation.resources import ReconcileResource
from assets.reconciliation.schedules import build_schedule
from assets.reconciliation.sensors import layer_progress_sensor

if TYPE_CHECKING:
    from orchestration.environment import Environment


def defs(environment: Environment) -> dg.Definitions:
    """The domain's assets, checks, job, schedule, sensor and its ``reconcile`` resource, for the
    root's :class:`orchestration.environment.Environment` (read when the definitions are built)."""
    settings = environment.settings
    resource = ReconcileResource.from_settings(settings, environment.aws_endpoint("dynamodb"))
    slas = {layer: dt.timedelta(seconds=s) for layer, s in resource.freshness_slas().items()}
    return dg.Definitions(
        assets=[hourly_verdicts, published_report, speed_heal, *progress_specs(slas)],
        asset_checks=CHECKS,
        jobs=[reconciliation_job],
        schedules=[build_schedule(settings.allowed_lateness_s, settings.archive_flush_s)],
        sensors=[layer_progress_sensor],
        resources={"reconcile": resource},
    )
