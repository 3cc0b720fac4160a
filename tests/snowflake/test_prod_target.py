"""dbt's `prod` target compiles from TALLY_SNOWFLAKE_* without an account, and none of the emulator's
macro overrides reaches its SQL (they apply to the `emulator` target only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.dbt, pytest.mark.snowflake]

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"


def test_prod_target_compiles_to_snowflake_sql_without_emulator_shims(tmp_path: Path) -> None:
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "TALLY_SNOWFLAKE_ACCOUNT": "myorg-myaccount",
           "TALLY_SNOWFLAKE_USER": "TALLY_SVC", "TALLY_SNOWFLAKE_PASSWORD": "not-used-by-compile",
           "TALLY_SNOWFLAKE_ROLE": "TALLY_ROLE", "TALLY_SNOWFLAKE_WAREHOUSE": "TALLY_WH"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "compile", "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR), "--target", "prod", "--no-populate-cache",
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
         # not stg_kinesis__events: an incremental model asks the warehouse whether it exists yet; with
         # an evaluation time, the segments model parses a timestamp through the same macro
         "-s", "fct_segment_memberships", "--vars", "{tally__segments_as_of: '2026-01-01T00:00:00Z'}"],
        env=env, cwd=DBT_PROJECT_DIR, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:]
    compiled = tmp_path / "target" / "compiled" / "tally" / "models"
    segments = (compiled / "marts" / "fct_segment_memberships.sql").read_text()
    # tally's own Snowflake SQL (cross_db.sql), not the emulator's replacements for it.
    assert "to_timestamp_tz(" in segments and "as timestamp_tz)" not in segments
    assert "get(" in segments and "json_extract_path_text" not in segments
