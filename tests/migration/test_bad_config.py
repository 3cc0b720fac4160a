"""A wrong TALLY_MIGRATION_CONFIG: one sentence naming the setting and the fix, exit 2, no traceback, no DSN."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streaming.migration.standin import COUNTS_QUERY, StandInConfig, simulate, write_postgres
from streaming.generator import GeneratorConfig, TrafficGenerator

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"PATH": "/usr/bin:/bin", "TALLY_HOME": str(tmp_path / "home"), "TALLY_MIGRATION_CONFIG": str(path),
           "LEGACY_PW": "hunter2-secret"}
    return subprocess.run([sys.executable, "-m", "orchestration.cli", "migrate", "report", "--days", "1",
                           "--day", "2026-01-05"], env=env, capture_output=True, text=True, timeout=120)


def _one_sentence(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "TALLY_MIGRATION_CONFIG=" in lines[0] and "Fix:" in lines[0] and "Traceback" not in proc.stderr
    assert "hunter2-secret" not in proc.stderr + proc.stdout
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def legacy_db(postgres_dsn: str) -> str:
    records = list(TrafficGenerator(GeneratorConfig(seed=5, tenants=3, start="2026-01-05T10:00:00Z",
                                                    duration_s=120, rate_per_s=5.0)).records())
    rows, _ = simulate(records, StandInConfig())
    write_postgres(postgres_dsn, rows)
    return postgres_dsn


def test_a_dsn_that_does_not_connect(tmp_path: Path, postgres_server) -> None:
    from streaming.stack.process import free_port

    dsn = "postgresql://reader:${LEGACY_PW}@127.0.0.1:" + str(free_port()) + "/analytics"
    proc = _run(tmp_path, {"legacy": {"postgres": {"dsn": dsn, "query": COUNTS_QUERY}}})
    _one_sentence(proc, "cannot connect", "legacy.postgres.dsn")


def test_a_query_missing_a_column(tmp_path: Path, legacy_db: str) -> None:
    query = COUNTS_QUERY.replace("count(*) as count", "count(*) as n")
    proc = _run(tmp_path, {"legacy": {"postgres": {"dsn": legacy_db, "query": query}}})
    _one_sentence(proc, "returns no count column", "alias")


def test_an_unknown_mapped_tenant(tmp_path: Path, legacy_db: str) -> None:
    proc = _run(tmp_path, {"legacy": {"postgres": {"dsn": legacy_db, "query": COUNTS_QUERY}},
                           "tenants": {"acct-tenant-001": "tenant-001"}})
    _one_sentence(proc, "maps no tally tenant for the legacy tenant 'acct-tenant-00", "under tenants")


def test_a_config_without_a_legacy_section(tmp_path: Path) -> None:
    _one_sentence(_run(tmp_path, {"tenants": {}}), "has no legacy section")
