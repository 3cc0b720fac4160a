"""The legacy sources: `tally generate --legacy` into a real PostgreSQL, and CSV/Parquet exports in S3
(the AWS emulator)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner

from orchestration.cli import main
from streaming.migration.config import load_config
from streaming.migration.legacy import LegacySource
from streaming.migration.standin import LegacyLedger

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc


def test_generate_legacy_writes_the_stand_in_its_ledger_and_its_config(
        postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["generate", "--duration-s", "120", "--tenants", "3", "--rate", "20",
                                       "--start", "2026-01-05T10:00:00Z", "--duplicates", "0.05", "--out", str(out),
                                       "--legacy", postgres_dsn, "--legacy-drop", "0.2", "--legacy-double", "0.02"])
    assert result.exit_code == 0, result.output
    ledger = LegacyLedger.load(out / "legacy_ledger.json")
    with psycopg.connect(postgres_dsn) as conn:
        (rows,) = conn.execute("select count(*) from legacy_events").fetchone()
        (late,) = conn.execute("select count(*) from legacy_events where counted_at - received_at = "
                               "interval '20 minutes'").fetchone()
    generated = json.loads((out / "ledger.json").read_text())["valid_events"]
    assert ledger.lost and ledger.double_counted
    assert rows == ledger.counted == generated - len(ledger.lost) + len(ledger.double_counted) == late
    source = LegacySource(load_config(str(out / "migration.yaml")))
    counts = source.counts(dt.datetime(2026, 1, 5, tzinfo=UTC), dt.datetime(2026, 1, 6, tzinfo=UTC))
    assert int(counts["n"].sum()) == rows
    assert set(counts["tenant_id"]) <= {"tenant-001", "tenant-002", "tenant-003"}  # mapped back to tally's names
    assert set(counts["event_type"]) <= {"page_view", "click", "form_submit", "identify", "custom"}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_exports_in_s3_are_a_legacy_source(s3: Any, bucket: str, tmp_path: Path, fmt: str) -> None:
    frame = pd.DataFrame({"tenant": ["ACME", "ACME", "GLOBEX", "ACME"],
                          "event_type": ["pageview", "pageview", "click", "pageview"],
                          "minute": ["2026-01-05T10:01:00Z", "2026-01-05T10:59:00Z", "2026-01-05T11:00:00Z",
                                     "2026-01-06T00:00:00Z"],  # the last is outside the range
                          "count": [3, 4, 5, 6]})
    buf = io.BytesIO()
    frame.to_csv(buf, index=False) if fmt == "csv" else frame.to_parquet(buf, index=False)
    s3.put_object(Bucket=bucket, Key=f"exports/day.{fmt}", Body=buf.getvalue())
    path = tmp_path / "migration.toml"
    path.write_text(f'[legacy.s3]\nbucket = "{bucket}"\nprefix = "exports/"\nformat = "{fmt}"\n'
                    '[tenants]\nACME = "acme"\nGLOBEX = "globex"\n[event_types]\npageview = "page_view"\n')
    counts = LegacySource(load_config(str(path)), s3).counts(dt.datetime(2026, 1, 5, tzinfo=UTC),
                                                              dt.datetime(2026, 1, 6, tzinfo=UTC))
    hour = int(dt.datetime(2026, 1, 5, 10, tzinfo=UTC).timestamp()) // 3600
    assert sorted(map(tuple, counts.itertuples(index=False))) == [("acme", "page_view", hour, 7),
                                                                   ("globex", "click", hour + 1, 5)]
