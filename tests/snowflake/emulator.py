"""The Snowflake emulator (fakesnow) as a real HTTP server on a spare loopback port, and a generated
archive in the AWS emulator's S3 to load into it. A pytest plugin of the whole suite (``tests/conftest.py``):
tests/snowflake and the shared warehouse suite (tests/warehouse) use the same server.

The server is the venv's ``fakesnow -s -p PORT``; clients reach it with host, port and protocol=http,
through the real snowflake-connector and dbt-snowflake. Each test gets its own database in it. Every
client call has a login and a network timeout: the emulator answers an unsupported statement with
HTTP 500, which the connector would otherwise retry for minutes.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming.archive.store import ArchiveStore
from streaming.generator import write_run
from streaming.settings import SnowflakeSettings
from streaming.stack.process import free_port, port_in_use, stop_pid, wait_until
from streaming.warehouse.snowflake_connect import connect

from tests.snowflake.archive import SNOWFLAKE_RUN, ArchiveFixture, write_archive

LOGIN_TIMEOUT_S = 10
NETWORK_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def snowflake_emulator(servers_dir: Path) -> Iterator[tuple[str, int]]:
    """(host, port) of a fakesnow server started for this session."""
    port = free_port()
    log = servers_dir / "fakesnow.log"
    fakesnow = Path(sys.executable).parent / "fakesnow"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([str(fakesnow), "-s", "-p", str(port), "--host", "127.0.0.1"],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: port_in_use(port), 60, "Snowflake emulator (fakesnow)", proc, log)
        yield "127.0.0.1", port
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=10)


def emulator_settings(host: str, port: int, database: str) -> SnowflakeSettings:
    # The emulator accepts any credentials; these are not secrets.
    return SnowflakeSettings(account="fakesnow", user="tally", password="emulator", role="TALLY",
                             warehouse="EMULATOR", database=database, schema="ANALYTICS",
                             host=host, port=port, protocol="http", load_method="insert")


def emulator_env(host: str, port: int, database: str) -> dict[str, str]:
    """TALLY_SNOWFLAKE_* for code that reads settings (dbt's `emulator` target, Dagster)."""
    return {
        "TALLY_SNOWFLAKE_ACCOUNT": "fakesnow", "TALLY_SNOWFLAKE_USER": "tally",
        "TALLY_SNOWFLAKE_PASSWORD": "emulator", "TALLY_SNOWFLAKE_ROLE": "TALLY",
        "TALLY_SNOWFLAKE_WAREHOUSE": "EMULATOR", "TALLY_SNOWFLAKE_DATABASE": database,
        "TALLY_SNOWFLAKE_SCHEMA": "ANALYTICS", "TALLY_SNOWFLAKE_HOST": host,
        "TALLY_SNOWFLAKE_PORT": str(port), "TALLY_SNOWFLAKE_PROTOCOL": "http",
        "TALLY_SNOWFLAKE_LOAD_METHOD": "insert",
    }


def create_database(host: str, port: int, database: str) -> None:
    bare = SnowflakeSettings(account="fakesnow", user="tally", password="emulator", database=database,
                             schema="ANALYTICS", host=host, port=port, protocol="http")
    kwargs = {"login_timeout_s": LOGIN_TIMEOUT_S, "network_timeout_s": NETWORK_TIMEOUT_S}
    with connect(SnowflakeSettings(**{**bare.__dict__, "database": None, "schema": None}), **kwargs) as conn:
        conn.cursor().execute(f"create database if not exists {database}")
    with connect(bare, **kwargs) as conn:
        conn.cursor().execute("create schema if not exists ANALYTICS")


@pytest.fixture
def sf_settings(snowflake_emulator: tuple[str, int]) -> SnowflakeSettings:
    """Settings for a fresh database of its own in the emulator."""
    host, port = snowflake_emulator
    database = f"TALLY_{uuid.uuid4().hex[:8].upper()}"
    create_database(host, port, database)
    return emulator_settings(host, port, database)


@pytest.fixture
def sf_conn(sf_settings: SnowflakeSettings) -> Iterator[Any]:
    with connect(sf_settings, LOGIN_TIMEOUT_S, NETWORK_TIMEOUT_S) as conn:
        yield conn


@pytest.fixture(scope="session")
def snowflake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("snowflake-run")
    write_run(SNOWFLAKE_RUN, out)
    return out


@pytest.fixture
def archive(s3: Any, bucket: str, snowflake_run: Path) -> ArchiveFixture:
    """The generated run archived into a fresh bucket, as the archiver would (plus a zombie batch)."""
    return write_archive(ArchiveStore(s3, bucket), snowflake_run)
