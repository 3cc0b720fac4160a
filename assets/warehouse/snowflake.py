"""The production warehouse as a Dagster resource: dagster-snowflake's SnowflakeResource, plus the same
small interface the local DuckDB warehouse resource offers (``kind``, ``connect()``), the raw-events
loader and reconciliation's reader.

Built by :func:`build_snowflake_warehouse` when the definitions are built for TALLY_ENV=prod (never at
import). Secrets are passed as ``dg.EnvVar`` so the Dagster UI and run config show the variable's name,
never its value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster_snowflake import SnowflakeResource

from streaming.settings import Settings, require_snowflake
from streaming.warehouse.snowflake import SESSION_PARAMETERS


class TallySnowflakeResource(SnowflakeResource):
    """Snowflake for tally: how raw events load (``copy`` from ``stage``, or ``insert``)."""

    load_method: str = "insert"
    stage: str | None = None

    @property
    def kind(self) -> str:
        return "snowflake"

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A snowflake-connector connection, like DuckDBWarehouse.connect() yields a DuckDB one."""
        with self.get_connection(raw_conn=True) as conn:
            yield conn

    def load_hours(self, store: Any, hours: Sequence[dt.datetime]) -> Any:
        """Replace ``hours`` in RAW.EVENTS / RAW.DEAD_LETTERS (see streaming.warehouse.snowflake_load)."""
        from streaming.warehouse.snowflake_load import load_hours

        with self.connect() as conn:
            return load_hours(conn, store, hours, method=self.load_method, stage=self.stage)

    def raw_counts(self, hours: Sequence[dt.datetime] | None) -> tuple[list[dt.datetime], Any, Any]:
        """(hours, per-minute rows, per-reason dead letters) of the raw tables, for raw_events_match_manifests;
        ``hours=None`` means every loaded hour."""
        from streaming.warehouse.snowflake_load import loaded_hours, raw_counts

        with self.connect() as conn:
            hours = loaded_hours(conn) if hours is None else list(hours)
            rows, dead = raw_counts(conn, hours)
        return hours, rows, dead

    def reader(self) -> Any:
        """Reconciliation's WarehouseReader over the Snowflake marts."""
        from streaming.warehouse.snowflake_reader import SnowflakeWarehouseReader

        return SnowflakeWarehouseReader(self.connect)


def _env_or_none(name: str, value: object) -> Any:
    return dg.EnvVar(name) if value else None


def build_snowflake_warehouse(settings: Settings, login_timeout_s: int = 30,
                              network_timeout_s: int = 600) -> TallySnowflakeResource:
    """The `warehouse` resource for TALLY_ENV=prod; raises SettingError naming a missing setting."""
    sf = require_snowflake(settings)
    extra: dict[str, Any] = {"session_parameters": dict(SESSION_PARAMETERS)}
    if sf.host:
        extra["host"] = sf.host
    if sf.port:
        extra["port"] = sf.port
    if sf.protocol != "https":
        extra["protocol"] = sf.protocol
    return TallySnowflakeResource(
        account=sf.account,
        user=sf.user,
        # Secrets by reference: Dagster resolves them at run time and shows only the variable's name.
        password=None if sf.private_key_path else _env_or_none("TALLY_SNOWFLAKE_PASSWORD", sf.password),
        private_key_path=sf.private_key_path,
        private_key_password=_env_or_none("TALLY_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", sf.private_key_passphrase)
        if sf.private_key_path else None,
        role=sf.role,
        warehouse=sf.warehouse,
        database=sf.database,
        schema=sf.schema,
        paramstyle="pyformat",
        login_timeout=login_timeout_s,
        network_timeout=network_timeout_s,
        additional_snowflake_connection_args=extra,
        load_method=sf.effective_load_method,
        stage=sf.stage,
    )
