"""The dbt unit tests (stitching and dedup logic on fixed rows), run here in CI rather than in every
scheduled `dbt build` (assets.dbt.assets.PRODUCTION_BUILD_ARGS leaves them out there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from streaming.warehouse.duckdb_load import ensure_raw_tables

pytestmark = [pytest.mark.integration, pytest.mark.dbt]

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"


def _dbt(args: list[str], db: Path, target: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TALLY_DUCKDB_PATH": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    return subprocess.run([str(Path(sys.executable).parent / "dbt"), *args, "--profiles-dir", ".", "--target", "local",
                           "--target-path", str(target), "--log-path", str(target / "logs")],
                          cwd=DBT_DIR, env=env, capture_output=True, text=True, timeout=300)


def test_dbt_unit_tests_pass(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as conn:
        ensure_raw_tables(conn)
    # Unit tests read the columns of their inputs from the warehouse: build them empty first.
    built = _dbt(["run", "--empty", "--select", "+int_identities_stitched"], db, tmp_path)
    assert built.returncode == 0, built.stdout[-4000:]
    tested = _dbt(["test", "--select", "test_type:unit"], db, tmp_path)
    assert tested.returncode == 0, tested.stdout[-4000:]
    assert "PASS=2" in tested.stdout, tested.stdout[-2000:]
