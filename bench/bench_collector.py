"""The collector's figures, each with a reference measured in the same run (the emulator, the load
generator and the collector share this machine's 2 cores).

1. ``collector_batch_events_per_s``: ``/v1/batch`` of 100 events from 16 keep-alive connections (wrk with
   a Lua body), durable acks, Kinesis on the emulator, sustained (the spool's depth at the end is compared
   with its depth after the first seconds); reference: a hand-rolled Starlette collector doing one
   PutRecords per request, no spool (``collector_batch_vs_naive``).
2. ``collector_burst_events_per_s``: the same load for 10 s while every PutRecords is throttled (injected
   at the botocore level in the collector process); then Kinesis is back and every acknowledged event must
   reach the stream (``collector_burst_lost_events``).
3. ``collector_track_requests_per_s``: single-event ``/v1/track`` from 32 connections; reference: a bare
   Starlette endpoint that only parses the body (``collector_track_vs_bare``).
4. ``collector_ack_p99_ms``: an open-loop client (its own process) at 2,000 events/s in batches of 20,
   latency from each request's scheduled send time to its 200.
5. ``collector_e2e_p99_latency_s``: at 1,000 events/s, request sent -> its events visible in the speed
   layer's Redis counters (a consumer process reading the emulator).
Also the same batch and track loads on granian (``*_granian``), the server the collector did not choose.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from bench.servers import emulator, redis_server
from streaming.aws import aws_client
from streaming.collector.writekeys import create_write_key
from streaming.resources import ensure_lease_table, ensure_stream
from streaming.stack.process import free_port, port_in_use, stop_pid, wait_until
from streaming.stream_reader import list_shard_ids

REGION = "us-east-1"
STREAM = "bench-collector"
KEY_TABLE = "bench-write-keys"
LUA = """
local f = io.open(os.getenv("BODY_FILE"), "r")
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("AUTH")
"""


# -- servers run in child processes -------------------------------------------------------------------
def _collector_child(port: int, env: dict[str, str], server: str, throttle_file: str) -> None:
    os.environ.update(env)
    from streaming.collector.run import build_app, uvicorn_server
    from streaming.settings import load_settings

    settings = load_settings()
    kinesis = None
    if throttle_file:
        from botocore.awsrequest import AWSResponse

        kinesis = aws_client("kinesis", REGION, settings.aws_endpoint_url)

        def throttle(**_: Any) -> Any:
            if os.path.exists(throttle_file):
                return AWSResponse("http://fault", 400, {}, None), {
                    "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400}}
            return None

        kinesis.meta.events.register("before-call.kinesis.PutRecords", throttle)
    if server == "granian":
        from granian.constants import Interfaces
        from granian.server import Server

        os.environ["BENCH_COLLECTOR_ENV"] = json.dumps(env)
        Server("bench.bench_collector:granian_app", address="127.0.0.1", port=port, interface=Interfaces.ASGI,
               workers=1, factory=True, log_enabled=False, websockets=False).serve()
        return
    uvicorn_server(build_app(settings, settings.aws_endpoint_url, kinesis=kinesis), "127.0.0.1", port).run()


def granian_app() -> Any:
    from streaming.collector.run import build_app
    from streaming.settings import load_settings

    os.environ.update(json.loads(os.environ["BENCH_COLLECTOR_ENV"]))
    settings = load_settings()
    return build_app(settings, settings.aws_endpoint_url)


def _reference_child(port: int, kind: str, endpoint: str) -> None:
    """The issue's references: ``naive`` (one PutRecords per request) and ``bare`` (parse the body only)."""
    import datetime as dt

    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    kinesis = aws_client("kinesis", REGION, endpoint)

    async def naive(request: Request) -> JSONResponse:
        doc = json.loads(await request.body())
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        records = []
        for i, m in enumerate(doc["batch"]):
            event = {"event_id": str(uuid.uuid4()), "tenant_id": "acme", "event_type": "custom",
                     "anonymous_id": m.get("anonymousId") or m.get("userId"), "user_id": m.get("userId"),
                     "occurred_at": m.get("timestamp") or now, "received_at": now, "source_id": "naive",
                     "source_seq": i, "properties": m.get("properties") or {}, "schema_version": 1}
            records.append({"Data": json.dumps(event).encode(), "PartitionKey": event["anonymous_id"]})
        await run_in_threadpool(kinesis.put_records, StreamName=STREAM, Records=records)
        return JSONResponse({"success": True})

    async def bare(request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse({"success": True})

    app = Starlette(routes=[Route("/v1/batch", naive, methods=["POST"]), Route("/v1/track", bare, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools")


@contextmanager
def child(target: Any, *args: Any) -> Iterator[int]:
    """``target(port, *args)`` in a spawned process of its own; yields the port once it listens."""
    port = free_port()
    proc = mp.get_context("spawn").Process(target=target, args=(port, *args))
    proc.start()
    try:
        wait_until(lambda: port_in_use(port), 60, target.__name__)
        yield port
    finally:
        stop_pid(proc.pid)
        proc.join(timeout=30)


# -- load -----------------------------------------------------------------------------------------------
def wrk(url: str, body: bytes, auth: str, connections: int, seconds: int, tmp: Path) -> dict[str, float]:
    script, body_file = tmp / "post.lua", tmp / f"body-{len(body)}.json"
    script.write_text(LUA)
    body_file.write_bytes(body)
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         env={**os.environ, "BODY_FILE": str(body_file), "AUTH": auth}, capture_output=True,
                         text=True, timeout=seconds + 60).stdout
    total = int(re.search(r"(\d+) requests in ([\d.]+)(m?s)", out).group(1))  # type: ignore[union-attr]
    elapsed = float(re.search(r"requests in ([\d.]+)(m?s)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    ok = total - (int(bad.group(1)) if bad else 0)
    return {"ok_per_s": ok / elapsed, "ok": ok, "non2xx": total - ok, "socket_errors": 0 if errors is None else 1}


def batch_body(n: int, tenant_tag: str = "") -> bytes:
    return json.dumps({"batch": [
        {"type": "track", "event": "Signed Up", "anonymousId": f"anon-{tenant_tag}{i % 37}", "userId": f"user-{i}",
         "timestamp": "2026-11-24T10:00:00.000Z", "properties": {"plan": "team", "path": "/signup"},
         "context": {"library": {"name": "analytics-python", "version": "2.4.0"}}} for i in range(n)]}).encode()


def track_body() -> bytes:
    return json.dumps({"event": "Signed Up", "anonymousId": "anon-1", "properties": {"plan": "team"}}).encode()


def _open_loop_client(port: int, auth: str, rate_per_s: float, seconds: float, batch: int, out: Any) -> None:
    """Open loop: request i is due at start + i / rate; latency runs from when it was due (no coordinated
    omission). Several keep-alive connections; a due request takes the first free one."""
    body = batch_body(batch)
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {auth}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    async def main() -> list[tuple[float, float, int]]:
        conns: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()
        for _ in range(16):
            conns.put_nowait(await asyncio.open_connection("127.0.0.1", port))
        results: list[tuple[float, float, int]] = []
        start = time.perf_counter() + 0.2
        n = int(rate_per_s * seconds)

        async def one(i: int) -> None:
            due = start + i / rate_per_s
            reader, writer = await conns.get()
            writer.write(head)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            conns.put_nowait((reader, writer))
            results.append((due, time.perf_counter() - due, status))

        tasks = []
        for i in range(n):
            delay = start + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return results

    results = asyncio.run(main())
    out.put([(due + time.time() - time.perf_counter(), lat, status) for due, lat, status in results])


def open_loop(port: int, auth: str, rate_per_s: float, seconds: float, batch: int) -> list[tuple[float, float, int]]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_open_loop_client, args=(port, auth, rate_per_s, seconds, batch, out))
    proc.start()
    results = out.get(timeout=seconds + 120)
    proc.join(timeout=30)
    return results


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values)


def stream_count(kinesis: Any) -> int:
    n = 0
    for shard in list_shard_ids(kinesis, STREAM):
        it = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = kinesis.get_records(ShardIterator=it, Limit=10_000)
            n += len(page["Records"])
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            it = page.get("NextShardIterator")
    return n


def _emulator_ceiling(kinesis: Any) -> float:
    """PutRecords of 500 ready-made records from one client: what the emulator takes right now."""
    ensure_stream(kinesis, "bench-ceiling", 4)
    records = [{"Data": batch_body(1)[:300], "PartitionKey": f"k{i % 37}"} for i in range(500)]
    started = time.perf_counter()
    for _ in range(40):
        kinesis.put_records(StreamName="bench-ceiling", Records=records)
    return 40 * 500 / (time.perf_counter() - started)


def _health(port: int) -> dict[str, Any]:
    return requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()


def depth(port: int) -> int:
    return int(_health(port)["depth_bytes"])


def wait_depth_zero(port: int, timeout_s: float = 300) -> float:
    started = time.monotonic()
    wait_until(lambda: depth(port) == 0, timeout_s, "the spool to drain")
    return time.monotonic() - started


# -- the run -----------------------------------------------------------------------------------------------
def run() -> dict[str, float]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: `make bench` installs Debian's wrk")
    out: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    try:
        with emulator() as endpoint:
            kinesis = aws_client("kinesis", REGION, endpoint)
            dynamodb = aws_client("dynamodb", REGION, endpoint)
            ensure_stream(kinesis, STREAM, 4)
            key = create_write_key(dynamodb, KEY_TABLE, "acme")
            import base64

            auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
            env = {"TALLY_AWS_ENDPOINT_URL": endpoint, "TALLY_STREAM_NAME": STREAM, "TALLY_WRITE_KEY_TABLE": KEY_TABLE,
                   "TALLY_HOME": str(tmp / "home")}
            body100 = batch_body(100)

            def collector(name: str, server: str = "uvicorn", throttle: str = "") -> Any:
                return child(_collector_child, {**env, "TALLY_COLLECTOR_STATE_DIR": str(tmp / name)}, server, throttle)

            out["collector_emulator_put_records_per_s"] = round(_emulator_ceiling(kinesis), 1)

            # 1. batches, sustained; the naive reference with the same load
            with collector("batch") as port:
                url = f"http://127.0.0.1:{port}/v1/batch"
                wrk(url, body100, auth, 16, 3, tmp)  # warm up
                wait_depth_zero(port)
                depths: list[tuple[float, int]] = []
                sampling = threading.Event()

                def sample() -> None:
                    started = time.monotonic()
                    while not sampling.is_set():
                        depths.append((time.monotonic() - started, depth(port)))
                        time.sleep(1)

                sampler = threading.Thread(target=sample)
                drained_before = _health(port)["drained_records"]
                sampler.start()
                started = time.monotonic()
                result = wrk(url, body100, auth, 16, 20, tmp)
                delivered = (_health(port)["drained_records"] - drained_before) / (time.monotonic() - started)
                sampling.set()
                sampler.join()
                drain_s = wait_depth_zero(port)
            early = max(d for t, d in depths if t <= 4)
            late = depths[-1][1]
            out["collector_batch_events_per_s"] = round(result["ok_per_s"] * 100, 1)
            out["collector_batch_delivered_per_s"] = round(delivered, 1)  # what the drainer got into Kinesis meanwhile
            out["collector_batch_spool_bytes_after_4s"] = float(early)
            out["collector_batch_spool_bytes_at_end"] = float(late)
            out["collector_batch_sustained"] = 1.0 if late <= max(early, 2 * len(body100) * 16) else 0.0
            out["collector_batch_drain_after_s"] = round(drain_s, 2)
            with child(_reference_child, "naive", endpoint) as port:
                naive = wrk(f"http://127.0.0.1:{port}/v1/batch", body100, auth, 16, 20, tmp)
            out["collector_naive_events_per_s"] = round(naive["ok_per_s"] * 100, 1)
            out["collector_batch_vs_naive"] = round(out["collector_batch_events_per_s"] / out["collector_naive_events_per_s"], 2)
            out["collector_batch_vs_emulator"] = round(out["collector_batch_events_per_s"] / out["collector_emulator_put_records_per_s"], 2)
            out["collector_drainer_vs_emulator"] = round(delivered / out["collector_emulator_put_records_per_s"], 2)

            # 2. a 10 s burst while Kinesis throttles every call, then zero loss once it is back
            flag = tmp / "throttle"
            flag.touch()
            before = stream_count(kinesis)
            with collector("burst", throttle=str(flag)) as port:
                burst = wrk(f"http://127.0.0.1:{port}/v1/batch", body100, auth, 16, 10, tmp)
                flag.unlink()
                wait_depth_zero(port)
            out["collector_burst_events_per_s"] = round(burst["ok_per_s"] * 100, 1)
            # wrk stops counting with requests in flight: those are acknowledged too, so the stream may hold more
            out["collector_burst_lost_events"] = float(max(0, burst["ok"] * 100 - (stream_count(kinesis) - before)))

            # 3. single-event track requests; the bare Starlette endpoint as reference
            with collector("track") as port:
                wrk(f"http://127.0.0.1:{port}/v1/track", track_body(), auth, 32, 3, tmp)
                track = wrk(f"http://127.0.0.1:{port}/v1/track", track_body(), auth, 32, 15, tmp)
            with child(_reference_child, "bare", endpoint) as port:
                bare = wrk(f"http://127.0.0.1:{port}/v1/track", track_body(), auth, 32, 15, tmp)
            out["collector_track_requests_per_s"] = round(track["ok_per_s"], 1)
            out["collector_bare_requests_per_s"] = round(bare["ok_per_s"], 1)
            out["collector_track_vs_bare"] = round(track["ok_per_s"] / bare["ok_per_s"], 3)

            # the same two loads on granian
            with collector("granian-batch", server="granian") as port:
                wrk(f"http://127.0.0.1:{port}/v1/batch", body100, auth, 16, 3, tmp)
                g_batch = wrk(f"http://127.0.0.1:{port}/v1/batch", body100, auth, 16, 15, tmp)
                g_track = wrk(f"http://127.0.0.1:{port}/v1/track", track_body(), auth, 32, 15, tmp)
                wait_depth_zero(port)
            out["collector_batch_events_per_s_granian"] = round(g_batch["ok_per_s"] * 100, 1)
            out["collector_track_requests_per_s_granian"] = round(g_track["ok_per_s"], 1)

            # 4. ack latency at a steady 2,000 events/s in batches of 20
            with collector("steady") as port:
                results = open_loop(port, auth, 100.0, 20, 20)
            assert all(status == 200 for _, _, status in results)
            out["collector_ack_p50_ms"] = round(statistics.median(lat for _, lat, _ in results) * 1000, 2)
            out["collector_ack_p99_ms"] = round(p99([lat for _, lat, _ in results]) * 1000, 2)

            # 5. request sent -> counter visible in Redis, at 1,000 events/s
            ensure_stream(kinesis, "bench-e2e", 2)
            out.update(_end_to_end({**env, "TALLY_STREAM_NAME": "bench-e2e"}, endpoint, auth, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _end_to_end(env: dict[str, str], endpoint: str, auth: str, tmp: Path) -> dict[str, float]:
    import redis

    dynamodb = aws_client("dynamodb", REGION, endpoint)
    ensure_lease_table(dynamodb, "bench-collector-leases")
    with redis_server() as server:
        client = redis.Redis.from_url(server.url)
        consumer_env = {**os.environ, **env, "TALLY_REDIS_URL": server.url, "TALLY_LEASE_TABLE": "bench-collector-leases"}
        consumer = subprocess.Popen([sys.executable, "-m", "streaming.speed.run"], env=consumer_env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            with child(_collector_child, {**env, "TALLY_COLLECTOR_STATE_DIR": str(tmp / "e2e")}, "uvicorn", "") as port:
                from streaming.speed import keys

                day = int(time.time()) // 86_400
                base = lambda: sum(int(v) for v in client.hvals(keys.counts("acme", "d", day)))  # noqa: E731
                requests.post(f"http://127.0.0.1:{port}/v1/batch", data=batch_body(1), headers={"Authorization": auth},
                              timeout=10)
                wait_until(lambda: base() > 0, 120, "the consumer counting a first event")
                start_count = base()
                ctx = mp.get_context("spawn")
                q = ctx.Queue()
                proc = ctx.Process(target=_open_loop_client, args=(port, auth, 50.0, 30, 20, q))
                proc.start()
                seen: list[tuple[float, int]] = []
                deadline = time.time() + 120
                while time.time() < deadline:
                    seen.append((time.time(), base() - start_count))
                    if seen[-1][1] >= 50 * 30 * 20 and not proc.is_alive():
                        break
                    time.sleep(0.02)
                results = q.get(timeout=60)
                proc.join(timeout=30)
        finally:
            stop_pid(consumer.pid)
    results.sort()
    latencies = []
    j = 0
    for i, (due, _, _) in enumerate(results):
        need = (i + 1) * 20
        while j < len(seen) and seen[j][1] < need:
            j += 1
        if j == len(seen):
            break
        latencies.append(seen[j][0] - due)
    lost = 50 * 30 * 20 - (seen[-1][1] if seen else 0)
    return {"collector_e2e_p50_latency_s": round(statistics.median(latencies), 3),
            "collector_e2e_p99_latency_s": round(p99(latencies), 3), "collector_e2e_lost_events": float(lost)}
