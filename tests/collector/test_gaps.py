"""A record lost between the collector and the stream is an ``upstream_gap`` of the right tenant.

The collector runs in process (uvicorn in a thread) so its drainer's Kinesis client can lose one record
at the botocore level: PutRecords answers success for it, but it never reaches the emulator. The
collector's clock is set back so the windows are closed when reconciliation runs.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from botocore.awsrequest import AWSResponse

from streaming.aws import aws_client
from streaming.collector.run import build_app
from streaming.collector.writekeys import create_write_key
from streaming.reconcile.service import Layers, run_reconcile
from streaming.warehouse.duckdb import DuckDBWarehouse
from streaming.settings import load_settings
from streaming.stack.process import free_port, port_in_use
from tests.collector.conftest import decoded
from tests.collector.layers import run_layers

pytestmark = [pytest.mark.integration, pytest.mark.dbt]


class LoseRecords:
    """PutRecords that says every record was taken but drops the ones ``lose`` picks (once each)."""

    def __init__(self, real: Any, lose: Callable[[dict[str, Any]], bool]) -> None:
        self.real, self.lose, self.lost = real, lose, []
        self._params: dict[str, Any] | None = None

    def install(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build.kinesis.PutRecords", self._capture)
        client.meta.events.register("before-call.kinesis.PutRecords", self._call)
        return client

    def _capture(self, params: dict[str, Any], **_: Any) -> None:
        self._params = dict(params)

    def _call(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        assert self._params is not None
        records = self._params["Records"]
        keep = []
        for r in records:
            doc = json.loads(r["Data"])
            if self.lose(doc) and doc["event_id"] not in {d["event_id"] for d in self.lost}:
                self.lost.append(doc)
            else:
                keep.append(r)
        answer = self.real.put_records(StreamName=self._params["StreamName"], Records=keep)
        taken = iter(answer["Records"])
        out = [next(taken) if r in keep else {"SequenceNumber": "0", "ShardId": "shardId-000000000000"} for r in records]
        return AWSResponse("http://fault", 200, {}, None), {"FailedRecordCount": 0, "Records": out,
                                                           "ResponseMetadata": {"HTTPStatusCode": 200}}


def test_a_record_lost_after_the_collector_is_an_upstream_gap_of_its_tenant(
        collector_env: dict[str, str], tmp_path: Path, kinesis: Any, dynamodb: Any, s3: Any,
        redis_client: Any, aws_endpoint: str) -> None:
    env = {**collector_env, "TALLY_COLLECTOR_STATE_DIR": str(tmp_path / "collector")}
    settings = load_settings(env)
    keys = {t: create_write_key(dynamodb, settings.collector.write_key_table, t) for t in ("acme", "globex")}
    fault = LoseRecords(aws_client("kinesis", "us-east-1", aws_endpoint),
                        lambda d: d.get("tenant_id") == "globex" and d.get("source_seq") in (5, 6))
    hooked = fault.install(aws_client("kinesis", "us-east-1", aws_endpoint))
    start = (int(time.time()) // 3600 - 2) * 3600  # two hours ago, on the hour
    now = [float(start + 60)]
    app = build_app(settings, aws_endpoint, kinesis=hooked, clock=lambda: now[0])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1/batch"
    try:
        for minute in range(12):  # a few events a minute for 12 minutes, so the gap's minutes close
            now[0] = start + 60 + minute * 60
            for tenant in keys:
                batch = [{"type": "page", "anonymousId": f"a-{i}", "properties": {"path": "/"}} for i in range(3)]
                assert requests.post(url, json={"batch": batch}, auth=(keys[tenant], ""), timeout=10).status_code == 200
        deadline = time.monotonic() + 30
        while app.spool.depth_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.spool.depth_bytes() == 0
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert [d["source_seq"] for d in fault.lost] == [5, 6]
    events, _ = decoded(kinesis, settings.stream_name)
    assert len(events) == 2 * 12 * 3 - 2
    run_layers(settings, kinesis, dynamodb, s3, redis_client, tmp_path)
    layers = Layers(s3=s3, bucket=settings.bucket, redis=redis_client, warehouse=DuckDBWarehouse(settings.duckdb_path),
                    dynamodb=dynamodb, lease_table=settings.lease_table, stream_name=settings.stream_name, kinesis=kinesis)
    utc = dt.timezone.utc
    run = run_reconcile(settings, layers, dt.datetime.fromtimestamp(start, utc),
                        dt.datetime.fromtimestamp(start + 3600, utc), who="pytest", write=False)
    gaps = run.result.sequences
    found = gaps[gaps.verdict == "upstream_gap"]
    cells = run.result.cells
    assert len(found) == 1, (gaps.astype(str).to_dict("records"), set(cells["pending_reason"].dropna()))
    gap = found.iloc[0]
    assert (gap.tenant_id, gap.source_id, gap.first_missing, gap.last_missing) == (
        "globex", app.spool.source_id, 5, 6)
    lost_minute = (start + 60 + 60) // 60  # numbers 4-6 of globex were its second minute's batch
    assert gap.min_minute <= lost_minute <= gap.max_minute
    assert run.result.unexplained_loss
