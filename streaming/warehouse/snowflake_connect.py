"""Connecting to Snowflake from :class:`~streaming.settings.SnowflakeSettings`.

Every connection has a login and a network timeout: an unreachable account (or the emulator answering
HTTP 500, which the connector retries) fails in bounded time instead of hanging a run. The keyword
arguments built here are the one place secrets are handed over; nothing here logs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from streaming.settings import SnowflakeSettings

#: Every session runs in UTC so that timestamp_ntz values are UTC wall-clock times, as in DuckDB.
SESSION_PARAMETERS = {"TIMEZONE": "UTC", "QUERY_TAG": "tally"}


def connect_kwargs(sf: SnowflakeSettings, login_timeout_s: int = 30, network_timeout_s: int = 600) -> dict[str, Any]:
    """Keyword arguments for ``snowflake.connector.connect`` (and dagster-snowflake's extra args)."""
    kwargs: dict[str, Any] = {
        "account": sf.account,
        "user": sf.user,
        "database": sf.database,
        "schema": sf.schema,
        "login_timeout": login_timeout_s,
        "network_timeout": network_timeout_s,
        "session_parameters": dict(SESSION_PARAMETERS),
        "paramstyle": "pyformat",
    }
    for name, value in (("role", sf.role), ("warehouse", sf.warehouse), ("host", sf.host), ("port", sf.port)):
        if value:
            kwargs[name] = value
    if sf.protocol != "https":
        kwargs["protocol"] = sf.protocol
    if sf.private_key_path:
        kwargs["private_key_file"] = sf.private_key_path
        if sf.private_key_passphrase:
            kwargs["private_key_file_pwd"] = sf.private_key_passphrase
    elif sf.password:
        kwargs["password"] = sf.password
    return kwargs


def describe(sf: SnowflakeSettings) -> str:
    """Where tally connects, for logs: no password, no key, no passphrase."""
    where = f"{sf.host}:{sf.port}" if sf.host else f"{sf.account}.snowflakecomputing.com"
    auth = "key pair" if sf.private_key_path else "password"
    return f"snowflake {sf.user}@{where} role={sf.role} warehouse={sf.warehouse} db={sf.database}.{sf.schema} ({auth})"


@contextmanager
def connect(sf: SnowflakeSettings, login_timeout_s: int = 30, network_timeout_s: int = 600) -> Iterator[Any]:
    """A Snowflake connection, closed on exit."""
    import snowflake.connector

    conn = snowflake.connector.connect(**connect_kwargs(sf, login_timeout_s, network_timeout_s))
    try:
        yield conn
    finally:
        conn.close()
