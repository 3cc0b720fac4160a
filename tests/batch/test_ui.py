"""The Dagster UI that `make ui` serves shows both layers growing from one stream (headless Chromium)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming.stack.process import free_port

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "ui"
LINEAGE = "assets/stream/kinesis_events?view=lineage&lineageScope=downstream&lineageDepth=10"
#: stream, archive, warehouse, marts and speed-layer assets.
EXPECTED = ("kinesis_events", "raw_events_archive", "raw_events", "fct_events", "dim_users", "redis_counters")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1800,1100", "--virtual-time-budget=30000")

pytestmark = [pytest.mark.browser, pytest.mark.dagster]


def _get(url: str, data: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[str]:
    """`make ui` on a free loopback port, with its own TALLY_HOME and DAGSTER_HOME (no stack needed)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALLY_", "DAGSTER_"))}
    env.update(TALLY_HOME=str(tmp_path / "tally"), DAGSTER_HOME=str(tmp_path / "tally" / "dagster_home"))
    log = open(tmp_path / "ui.log", "wb")
    # -o: never re-run the install step from inside a test.
    proc = subprocess.Popen(["make", "-o", ".venv/.installed", "ui", f"UI_PORT={port}"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        query = json.dumps({"query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"})
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the UI did not load the code location in time"
            try:
                answer = json.loads(_get(f"{base}/graphql", query.encode()))
                entries = answer["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except (OSError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1)
        _get(f"{base}/graphql", json.dumps({"query": "mutation { setNuxSeen }"}).encode())  # no welcome dialog
        assert (tmp_path / "tally" / "dagster_home" / "dagster.yaml").exists()
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium"
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, timeout=180)


def test_lineage_graph_shows_stream_archive_warehouse_marts_and_speed_layer(ui: str, tmp_path: Path) -> None:
    url = f"{ui}/{LINEAGE}"
    missing: list[str] = list(EXPECTED)
    for _ in range(3):  # the graph is laid out asynchronously: give it a few tries
        dom = _chromium(tmp_path, "--dump-dom", url).stdout.decode("utf-8", "replace")
        missing = [name for name in EXPECTED if name not in dom]
        if not missing:
            break
    assert not missing, f"not in the lineage graph: {missing}"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = tmp_path / "lineage.png"
    _chromium(tmp_path, f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 10_000
    shutil.copy(shot, OUTPUT / "lineage.png")
