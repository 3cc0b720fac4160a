"""A stalled layer, end to end with the real Dagster daemon: the speed consumer and the archiver run as
their own processes, `dagster-daemon run` runs tally's sensors (running by default: nothing is switched on
here) and Dagster's freshness daemon against a temporary DAGSTER_HOME. The archiver is paused while records
keep coming: its position clock stops, its progress asset goes stale (FAIL) and one alert reaches a
loopback json:// webhook; resumed, it catches up and one "resolved" follows."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from streaming.generator import GeneratorConfig
from tests.channels import Received, webhook
from tests.reconcile.conftest import Clients, generated
from tests.reconcile.live import live

pytestmark = [pytest.mark.integration, pytest.mark.dagster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = GeneratorConfig(seed=73, tenants=4, start="2026-01-10T10:00:00Z", duration_s=300, rate_per_s=6.0)


def _archive(channel: Received) -> list[str]:
    return [title for title in channel.titles() if "the archive layer" in title]


def _wait(channel: Received, count: int, daemon: subprocess.Popen[bytes], log: Path, timeout_s: float = 360) -> None:
    deadline = time.time() + timeout_s
    while len(_archive(channel)) < count:
        assert daemon.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, (channel.titles(), log.read_text()[-3000:])
        time.sleep(2)


def test_a_stalled_archiver_goes_stale_alerts_once_and_resolves_once(
        tmp_path: Path, aws_endpoint: str, redis_url: str, clients: Clients, redis_client: redis.Redis) -> None:
    records, _ = generated(TRAFFIC)
    half = len(records) // 2
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    with webhook() as hook, live(tmp_path, aws_endpoint, redis_url, clients, redis_client,
                                 TALLY_FRESHNESS_ARCHIVE_S="60", TALLY_METRICS_PORT="0") as run:
        run.start("speed")
        run.start("archiver")
        run.wait_for_tip(run.send(records[:half]))
        run.batch()  # the warehouse exists, as after any build
        log = tmp_path / "daemon.log"
        env = {**run.env, "DAGSTER_HOME": str(home), "TALLY_ALERT_URLS": hook.url,
               "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5", "HOME": os.environ.get("HOME", str(tmp_path))}
        with open(log, "ab") as out:
            daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w",
                                       str(ROOT / "workspace.yaml")], env=env, cwd=ROOT, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            from dagster import AssetKey, DagsterInstance

            instance = DagsterInstance.from_config(str(home))
            key = AssetKey(["reconciliation", "archive_progress"])
            deadline = time.time() + 240
            while instance.get_latest_materialization_event(key) is None:  # the progress sensor ticks by itself
                assert daemon.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(2)
            run.pause("archiver")
            run.send(records[half:])  # the archive's clock stops at the first of these
            _wait(hook, 1, daemon, log)
            title = _archive(hook)[0]
            assert title.startswith("tally STALE: the archive layer is past its freshness SLA (60 s)")
            body = next(b for t, b in hook.messages if t == title)
            assert "reconciliation/archive_progress" in body and "tally archive --follow" in body
            run.resume("archiver")
            _wait(hook, 2, daemon, log)
            assert _archive(hook) == [title, f"RESOLVED: {title}"]
            time.sleep(10)
            assert len(_archive(hook)) == 2  # no repeat while it stays fresh
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
