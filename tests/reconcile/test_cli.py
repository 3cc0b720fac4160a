"""`tally reconcile` and `tally heal` against the real layers: exit codes for cron/CI, and healing."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from click.testing import CliRunner

from orchestration.cli import main
from streaming.settings import Settings
from tests.reconcile.conftest import WINDOW, Clients

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(settings: Settings) -> dict[str, str]:
    return {
        "TALLY_ENV": "local", "TALLY_HOME": str(settings.home), "TALLY_AWS_ENDPOINT_URL": settings.aws_endpoint_url or "",
        "TALLY_REDIS_URL": settings.redis_url or "", "TALLY_STREAM_NAME": settings.stream_name,
        "TALLY_BUCKET": settings.bucket, "TALLY_LEASE_TABLE": settings.lease_table,
        "TALLY_DUCKDB_PATH": str(settings.duckdb_path),
    }


def test_reconcile_exits_non_zero_on_loss_and_heal_repairs_it(
        run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _env(run_settings).items():
        monkeypatch.setenv(key, value)
    window = ["--from", WINDOW[0].isoformat(), "--to", WINDOW[1].isoformat()]
    runner = CliRunner()
    speed()
    clean = runner.invoke(main, ["reconcile", *window])
    assert clean.exit_code == 0, clean.output
    assert "all closed cells agree" in clean.output and "report path=" in clean.output

    redis_client.flushall()
    lossy = runner.invoke(main, ["reconcile", *window])
    assert lossy.exit_code == 1, lossy.output
    assert "speed_missing" in lossy.output and "UNEXPLAINED LOSS" in lossy.output

    dry = runner.invoke(main, ["heal", *window, "--dry-run"])
    assert dry.exit_code == 0 and "would heal" in dry.output
    assert redis_client.dbsize() == 0  # a dry run writes nothing

    healed = runner.invoke(main, ["heal", *window, "--who", "ci"])
    assert healed.exit_code == 0, healed.output
    assert "healed " in healed.output and "recorded in" in healed.output

    again = runner.invoke(main, ["reconcile", *window])
    assert again.exit_code == 0, again.output

    log = runner.invoke(main, ["heals"])
    assert log.exit_code == 0 and "ci: healed" in log.output
    reports = list((run_settings.home / "reports").glob("*.html"))
    assert len(reports) == 5  # one per reconcile run (each heal reconciles first)
    uploaded = clients.s3.list_objects_v2(Bucket=run_settings.bucket, Prefix="reports/")["Contents"]
    assert {o["Key"] for o in uploaded} >= {f"reports/{p.name}" for p in reports}


def test_bad_setting_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_RECONCILE_TOLERANCE_REL", "5")
    result = CliRunner().invoke(main, ["reconcile"])
    assert result.exit_code == 2
    assert "TALLY_RECONCILE_TOLERANCE_REL" in result.output


def test_reconcile_piped_to_a_file_is_complete_and_the_json_report_holds_every_finding(
        run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients, tmp_path: Any) -> None:
    """Not on a terminal: every count and every finding on its own complete line (no 80-column cut), and
    the JSON report's findings equal the engine's Result, frame by frame, every column."""
    import json
    import re
    import subprocess
    import sys

    from streaming.reconcile.report import finding_frames, records
    from tests.reconcile.conftest import reconcile_run

    speed(skip=lambda record: b"tenant-001" in record.data and hash(record.sequence_number) % 5 == 0)
    window = ["--from", WINDOW[0].isoformat(), "--to", WINDOW[1].isoformat()]
    out = tmp_path / "reconcile.txt"
    with open(out, "wb") as fh:
        proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "reconcile", *window],
                              env={**_env(run_settings), "PATH": "/usr/bin:/bin", "COLUMNS": "80"}, stdout=fh,
                              stderr=subprocess.PIPE, text=False, timeout=300)
    assert proc.returncode == 1, proc.stderr  # speed_missing: loss
    lines = out.read_text().splitlines()
    pair = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ ]*)')
    parsed = [(line.split(" ", 1)[0], dict(pair.findall(line))) for line in lines]
    assert all(kind in {"count", "cell", "sequence", "rollup", "event_id", "late", "result", "report"}
               for kind, _ in parsed), lines[:5]
    assert "…" not in out.read_text() and max(len(line) for line in lines) > 80

    engine = reconcile_run(run_settings, redis_client, clients).result
    cells = [fields for kind, fields in parsed if kind == "cell"]
    assert len(cells) == len(engine.findings()) > 0
    assert all(set(fields) == set(engine.findings().columns) for fields in cells)  # every column, generically
    assert {(f["tenant_id"], f["verdict"]) for f in cells} >= {("tenant-001", "speed_missing")}
    assert len([k for k, _ in parsed if k == "sequence"]) == len(engine.sequences)
    result = dict(parsed[-2][1]) if parsed[-1][0] == "report" else dict(parsed[-1][1])
    assert result["outcome"] == "loss" and result["exit_status"] == "1"
    assert "UNEXPLAINED LOSS" in result["headline"] and "cells" in result["headline"]

    report_path = [f for k, f in parsed if k == "report"][0]["path"]
    report = json.loads((run_settings.home / "reports" / (report_path.rsplit("/", 1)[-1][:-5] + ".json")).read_text())
    for name, frame in finding_frames(engine).items():
        assert report["findings"][name] == records(frame), name
    assert {r["verdict"]: r["of"] for r in report["counts"]}["upstream_gap"] == "sequence numbers"
