"""The migration domain's resource: the parallel run's settings, read once when the definitions are built
(``defs(environment)``), so a run uses what the code location was loaded with."""

import dagster as dg


class MigrationSettings(dg.ConfigurableResource):
    """TALLY_MIGRATION_CONFIG, TALLY_MIGRATION_TOLERANCE and TALLY_MIGRATION_READY_DAYS."""

    config_path: str | None = None
    tolerance: float = 0.005
    ready_days: int = 14
