"""Fixtures that start real servers: a redis-server on a spare port and the AWS emulator over HTTP.

Nothing here uses the Redis at 6379 or any state left behind: every session starts its own servers
under a temporary directory, and each test gets a flushed Redis and its own stream/bucket names.
``--redis-url`` points the Redis fixtures at an existing server instead (it is flushed after each test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.aws import aws_client
from streaming.resources import ensure_bucket, ensure_lease_table, ensure_stream
from streaming.stack.process import free_port, port_in_use, stop_pid, wait_until
from streaming.stack.redis_local import RedisServer

#: The Snowflake emulator's fixtures, for tests/snowflake and the shared warehouse suite (tests/warehouse).
pytest_plugins = ["tests.snowflake.emulator"]

REGION = "us-east-1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--redis-url", default=None, help="use this Redis instead of starting one (it gets flushed)")


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest, servers_dir: Path) -> Iterator[str]:
    given = request.config.getoption("--redis-url")
    if given:
        yield given
        return
    server = RedisServer(workdir=servers_dir / "redis").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    try:
        yield client
    finally:
        client.flushall()
        client.close()


@pytest.fixture(scope="session")
def aws_endpoint(servers_dir: Path) -> Iterator[str]:
    """The patched moto server in its own process, as `tally stack up` runs it."""
    port = free_port()
    log = servers_dir / "emulator.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streaming.stack.emulator", "--port", str(port)],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: port_in_use(port), 60, "AWS emulator", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=10)


@pytest.fixture
def kinesis(aws_endpoint: str) -> Any:
    return aws_client("kinesis", REGION, aws_endpoint)


@pytest.fixture
def s3(aws_endpoint: str) -> Any:
    return aws_client("s3", REGION, aws_endpoint)


@pytest.fixture
def dynamodb(aws_endpoint: str) -> Any:
    return aws_client("dynamodb", REGION, aws_endpoint)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stream_name(kinesis: Any) -> Iterator[str]:
    """A fresh 2-shard stream for one test."""
    name = unique_name("test-stream")
    ensure_stream(kinesis, name, 2)
    yield name
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_name("test-bucket")
    ensure_bucket(s3, name, REGION)
    return name


@pytest.fixture
def lease_table(dynamodb: Any) -> str:
    name = unique_name("test-leases")
    ensure_lease_table(dynamodb, name)
    return name


@pytest.fixture
def tally_env(tmp_path: Path, aws_endpoint: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for code that reads settings: its own TALLY_HOME, the fixtures' servers."""
    env = {
        "TALLY_ENV": "local",
        "TALLY_HOME": str(tmp_path / "tally_home"),
        "TALLY_AWS_ENDPOINT_URL": aws_endpoint,
        "TALLY_REDIS_URL": redis_url,
        "TALLY_STREAM_NAME": unique_name("stream"),
        "TALLY_BUCKET": unique_name("bucket"),
        "TALLY_LEASE_TABLE": unique_name("leases"),
        "TALLY_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
    }
    for key in [k for k in os.environ if k.startswith("TALLY_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the session (initdb + pg_ctl; see streaming/stack/postgres_local.py)."""
    from streaming.stack.postgres_local import PostgresServer

    # Its own directory under /tmp, not pytest's: the server runs as the postgres user when the tests run
    # as root, and every pytest session on the machine resets /tmp/pytest-of-<user> to 0700 as it starts,
    # which left a running server unable to reach its data directory (PANIC at its next checkpoint).
    root = Path(tempfile.mkdtemp(prefix="tally-postgres-"))
    server = PostgresServer.start(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: Any) -> str:
    """A fresh database of the session's PostgreSQL server for one test."""
    return postgres_server.create_database(unique_name("db").replace("-", "_"))
