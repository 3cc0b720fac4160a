"""The ``warehouse`` resource: one typed Dagster resource around the warehouse adapter
(:mod:`streaming.warehouse`), DuckDB locally and Snowflake in production.

Every asset, check and sensor reaches the warehouse through :meth:`WarehouseResource.adapter`; which
adapter it is was decided when the definitions were built (:func:`build_warehouse`), never in an asset.
For Snowflake, secrets are held as ``dg.EnvVar`` so the Dagster UI and run config show the variable's
name, never its value, and connections are dagster-snowflake's (``SnowflakeResource.get_connection``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from streaming.settings import Settings, require_snowflake
from streaming.warehouse.base import LoadResult, RawCell, RawDead, Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """``kind`` duckdb: ``path`` is the DuckDB file (dbt's ``local`` target writes the same file).
    ``kind`` snowflake: the connection fields of dagster-snowflake's SnowflakeResource, plus how raw
    events load (``copy`` from ``stage``, or ``insert``)."""

    kind: Literal["duckdb", "snowflake"] = "duckdb"
    path: str | None = None
    account: str | None = None
    user: str | None = None
    password: str | None = None
    private_key_path: str | None = None
    private_key_password: str | None = None
    role: str | None = None
    warehouse: str | None = None
    database: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    login_timeout: int = 30
    network_timeout: int = 600
    additional_snowflake_connection_args: dict[str, Any] | None = None
    load_method: str = "insert"
    stage: str | None = None

    def adapter(self) -> Warehouse:
        """The warehouse adapter this resource was configured for."""
        if self.kind == "duckdb":
            from streaming.warehouse.duckdb import DuckDBWarehouse

            if not self.path:
                raise dg.Failure("the duckdb warehouse resource needs its path (TALLY_DUCKDB_PATH)")
            return DuckDBWarehouse(self.path)
        from streaming.warehouse.snowflake import SnowflakeWarehouse

        return SnowflakeWarehouse(self._snowflake_connection, load_method=self.load_method, stage=self.stage)

    @contextmanager
    def _snowflake_connection(self) -> Iterator[Any]:
        from dagster_snowflake import SnowflakeResource

        resource = SnowflakeResource(
            account=self.account, user=self.user, password=self.password, private_key_path=self.private_key_path,
            private_key_password=self.private_key_password, role=self.role, warehouse=self.warehouse,
            database=self.database, schema=self.schema_, paramstyle="pyformat", login_timeout=self.login_timeout,
            network_timeout=self.network_timeout,
            additional_snowflake_connection_args=self.additional_snowflake_connection_args,
        )
        with resource.get_connection(raw_conn=True) as conn:
            yield conn

    # What the assets call, each a one-line pass to the adapter.
    def connect(self) -> Any:
        return self.adapter().connect()

    def load_hours(self, store: Any, hours: Sequence[dt.datetime]) -> LoadResult:
        return self.adapter().load_hours(store, hours)

    def raw_counts(self, hours: Sequence[dt.datetime] | None) -> tuple[list[dt.datetime], list[RawCell], list[RawDead]]:
        """(hours, per-minute rows, per-reason dead letters); ``hours=None`` means every loaded hour."""
        adapter = self.adapter()
        hours = adapter.loaded_hours() if hours is None else list(hours)
        rows, dead = adapter.raw_counts(hours)
        return hours, rows, dead

    def reader(self) -> Warehouse:
        """What reconciliation reads: the adapter itself."""
        return self.adapter()

    def dbt_env(self) -> dict[str, str]:
        """What dbt's profile needs to find this warehouse (the local target reads TALLY_DUCKDB_PATH)."""
        return {"TALLY_DUCKDB_PATH": self.path} if self.kind == "duckdb" and self.path else {}


def _env_or_none(name: str, value: object) -> Any:
    return dg.EnvVar(name) if value else None


def build_snowflake_warehouse(settings: Settings, login_timeout_s: int = 30,
                              network_timeout_s: int = 600) -> WarehouseResource:
    """The `warehouse` resource for TALLY_ENV=prod; raises SettingError naming a missing setting."""
    from streaming.warehouse.snowflake_connect import SESSION_PARAMETERS

    sf = require_snowflake(settings)
    extra: dict[str, Any] = {"session_parameters": dict(SESSION_PARAMETERS)}
    if sf.host:
        extra["host"] = sf.host
    if sf.port:
        extra["port"] = sf.port
    if sf.protocol != "https":
        extra["protocol"] = sf.protocol
    return WarehouseResource(
        kind="snowflake",
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
        login_timeout=login_timeout_s,
        network_timeout=network_timeout_s,
        additional_snowflake_connection_args=extra,
        load_method=sf.effective_load_method,
        stage=sf.stage,
    )


def build_warehouse(settings: Settings) -> WarehouseResource:
    """The `warehouse` resource for the environment ``settings`` name (when definitions are built)."""
    if settings.is_local:
        return WarehouseResource(kind="duckdb", path=str(settings.duckdb_path.resolve()))
    return build_snowflake_warehouse(settings)
