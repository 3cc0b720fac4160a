"""The adapter for the configured environment: DuckDB locally, Snowflake in production (for the CLI and
the services; Dagster builds it from its ``warehouse`` resource, :mod:`assets.warehouse.resources`)."""

from __future__ import annotations

from streaming.settings import Settings, require_snowflake
from streaming.warehouse.base import Warehouse


def warehouse_for(settings: Settings) -> Warehouse:
    """The warehouse ``settings`` name; raises SettingError naming a missing TALLY_SNOWFLAKE_* in prod."""
    if settings.is_local:
        from streaming.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.duckdb_path)
    from streaming.warehouse.snowflake import SnowflakeWarehouse

    return SnowflakeWarehouse.from_settings(require_snowflake(settings))
