"""What the reconciliation domain adds to the Definitions root (which merges :func:`defs`)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from assets.reconciliation.assets import build_schedule, hourly_verdicts, published_report, reconciliation_job, speed_heal
from assets.reconciliation.checks import CHECKS
from assets.reconciliation.progress import layer_progress_sensor, progress_specs
from assets.reconciliation.resources import ReconcileResource


def defs(environment: object | None = None) -> dg.Definitions:
    """The domain's assets, checks, job, schedule, sensor and its ``reconcile`` resource.

    ``environment`` is the root's :class:`orchestration.environment.Environment` (read when the
    definitions are built); None builds one the same way.
    """
    if environment is None:
        from orchestration.environment import get_environment

        environment = get_environment()
    settings = environment.settings  # type: ignore[attr-defined]
    resource = ReconcileResource.from_settings(settings, environment.aws_endpoint("dynamodb"))  # type: ignore[attr-defined]
    slas = {layer: dt.timedelta(seconds=s) for layer, s in resource.freshness_slas().items()}
    return dg.Definitions(
        assets=[hourly_verdicts, published_report, speed_heal, *progress_specs(slas)],
        asset_checks=CHECKS,
        jobs=[reconciliation_job],
        schedules=[build_schedule(settings.allowed_lateness_s, settings.archive_flush_s)],
        sensors=[layer_progress_sensor],
        resources={"reconcile": resource},
    )
