"""Running tally unattended, with real parts: Debian's Prometheus, started here on a loopback port,
scrapes the speed consumer and the archiver (their own processes) while records are sent; its HTTP API
then answers the lag and the event counts, equal to what the ledger says was processed. The same
processes log JSON lines with the stated fields, and no log holds a user id or an anonymous id."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from streaming.generator import GeneratorConfig
from streaming.stack.process import free_port
from tests.reconcile.conftest import Clients, generated
from tests.reconcile.live import live

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = GeneratorConfig(seed=71, tenants=8, start="2026-01-09T10:00:00Z", duration_s=400, rate_per_s=10.0,
                          duplicate_rate=0.03, late_rate=0.02, late_delay_s=(30, 120), malformed_rate=0.02)


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
                       for job, port in targets.items())
        config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n"
                          f"  - {ROOT / 'orchestration' / 'alerts' / 'tally-rules.yml'}\nscrape_configs:\n{jobs}")
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make test` installs Debian's prometheus package"
        self.log = open(workdir / "prometheus.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, (workdir / "prometheus.log").read_text()[-2000:]
            time.sleep(0.3)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def _wait_for(prom: Prometheus, expr: str, want: float, timeout_s: float = 60) -> float:
    deadline = time.time() + timeout_s
    got = float("nan")
    while time.time() < deadline:
        result = prom.query(expr)
        got = float(result[0]["value"][1]) if result else float("nan")
        if got == want:
            return got
        time.sleep(1)
    return got


def test_prometheus_scrapes_the_consumers_under_load_and_the_counts_equal_the_ledger(
        tmp_path: Path, aws_endpoint: str, redis_url: str, clients: Clients, redis_client: redis.Redis) -> None:
    records, ledger = generated(TRAFFIC)
    ports = {"tally-speed": free_port(), "tally-archiver": free_port()}
    with live(tmp_path, aws_endpoint, redis_url, clients, redis_client, TALLY_LOG_FORMAT="json") as run:
        prom = Prometheus(tmp_path, ports)
        try:
            run.start("speed", TALLY_METRICS_PORT=str(ports["tally-speed"]))
            run.start("archiver", TALLY_METRICS_PORT=str(ports["tally-archiver"]))
            half = len(records) // 2
            run.send(records[:half])
            assert _wait_for(prom, 'count(up{job=~"tally-.*"} == 1)', 2) == 2  # scraped while records arrive
            run.wait_for_tip(run.send(records[half:]))
            speed_read = _wait_for(prom, 'sum(tally_stream_records_read_total{group="speed"})', ledger.records_total)
            assert speed_read == ledger.records_total
            assert _wait_for(prom, 'sum(tally_speed_events_applied_total)', ledger.valid_events) == ledger.valid_events
            assert _wait_for(prom, 'sum(tally_archive_records_total)', ledger.records_total) == ledger.records_total
            assert prom.value('sum(tally_stream_records_read_total{group="archiver"})') == ledger.records_total
            for group in ("speed", "archiver"):
                by_reason = {r["metric"]["reason"]: int(float(r["value"][1])) for r in prom.query(
                    f'sum by (reason) (tally_dead_letters_total{{group="{group}"}})')}
                assert by_reason == ledger.dead_letters, group
            # The lag: both groups at the tip of every shard, MillisBehindLatest 0, nothing stalled.
            lag = prom.query("max by (group, shard) (tally_shard_behind_latest_seconds)")
            assert {(r["metric"]["group"], r["metric"]["shard"]) for r in lag} == {
                (g, s) for g in ("speed", "archiver") for s in ("shardId-000000000000", "shardId-000000000001")}
            assert _wait_for(prom, "max(tally_shard_behind_latest_seconds)", 0) == 0
            assert _wait_for(prom, "min(tally_shard_at_tip)", 1) == 1
            assert prom.value("sum(tally_archive_objects_total)") > 0
            assert prom.value("sum(tally_speed_apply_seconds_count)") > 0
            assert prom.query('ALERTS{alertstate="firing"}') == []  # the shipped rules load and are quiet
        finally:
            prom.stop()
    _logs_are_json_without_personal_ids(tmp_path, records)


def _logs_are_json_without_personal_ids(home: Path, records: list[Any]) -> None:
    personal = set()
    for record in records:
        try:
            doc = json.loads(record.data)
        except ValueError:
            continue
        if isinstance(doc, dict):
            personal |= {v for k in ("user_id", "anonymous_id") if isinstance(v := doc.get(k), str) and len(v) >= 6}
    assert len(personal) > 50
    lines: list[dict[str, Any]] = []
    for name in ("speed", "archiver"):
        text = (home / f"{name}.log").read_text()
        found = [p for p in personal if p in text]
        assert not found, (name, found[:5])
        for line in text.splitlines():
            if line.strip():
                doc = json.loads(line)  # every log line is one JSON object
                assert {"ts", "level", "component", "logger", "message"} <= set(doc), doc
                assert doc["component"] == name
                lines.append(doc)
    took = [d for d in lines if d["message"].startswith("worker ") and " took " in d["message"]]
    assert {d["component"] for d in took} == {"speed", "archiver"}
    assert all({"group", "shard", "worker"} <= set(d) for d in took)
    commits = [d for d in lines if d["component"] == "archiver" and "committed" in d["message"]]
    assert commits and all({"shard", "records", "objects", "bytes", "duration_s"} <= set(d) for d in commits)
    assert sum(d["records"] for d in commits) == len(records)
    assert any(d["message"].startswith("metrics on http://127.0.0.1:") and "port" in d for d in lines)
