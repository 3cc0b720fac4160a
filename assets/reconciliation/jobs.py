"""The reconciliation job: every asset of the group, for one hourly partition."""

import dagster as dg

from assets.reconciliation.keys import GROUP
from assets.warehouse.partitions import hourly

reconciliation_job = dg.define_asset_job(
    "reconciliation_hourly_job",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=hourly,
    description="Reconcile the partition's hour, publish its report if the batch layers agree, heal Redis.",
)
