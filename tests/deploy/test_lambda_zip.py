"""The speed layer's Lambda zip, unpacked alone: only Python, no project checkout, a real Redis."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from orchestration.cli import main
from streaming.deploy.lambda_zip import MANIFEST, UNZIPPED_LIMIT, ZIPPED_DIRECT_LIMIT, LambdaZip
from streaming.generator import GeneratorConfig
from streaming.stack.redis_local import RedisServer
from tests.deploy.conftest import unpack
from tests.speed.conftest import assert_matches_ledger, generated

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/tally-events"
SHARDS = ("shardId-000000000000", "shardId-000000000001")

# Runs in the unpacked zip's world: `python -I -S` (no site-packages, no environment's paths, no script
# directory), sys.path = the unpacked directory + the standard library. One event file per stdin line.
RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from streaming.speed import aggregate, lambda_handler
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"c_extension": aggregate._native is not None, "handler_file": lambda_handler.__file__,
                  "modules": loaded, "path": sys.path}), flush=True)
for line in sys.stdin:
    with open(line.strip()) as fh:
        print(json.dumps(lambda_handler.handler(json.load(fh), None)), flush=True)
"""


def kinesis_event(datas: list[bytes], first_seq: int) -> dict[str, Any]:
    """What a Kinesis event source mapping hands the function: records of two shards, alternating."""
    records = []
    for i, data in enumerate(datas):
        shard = SHARDS[i % 2]
        seq = str(49_600_000_000_000_000_000_000_000_000_000_000_000_000_000 + first_seq + i)
        records.append({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": f"pk-{i}", "sequenceNumber": seq,
                        "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": 1_767_225_600.5},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard}:{seq}",
            "eventName": "aws:kinesis:record", "awsRegion": "us-east-1", "eventSourceARN": ARN,
        })
    return {"Records": records}


class Function:
    """The unpacked zip run as Lambda runs it: one process, the handler called once per event."""

    def __init__(self, code: Path, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        (workdir / "runner.py").write_text(RUNNER)
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(workdir / "runner.py"), str(code)], cwd=workdir,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.info = json.loads(self._line())
        self.events = 0

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the function died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return line

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events += 1
        path = self.workdir / f"event-{self.events}.json"
        path.write_text(json.dumps(event))
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _function(zip_path: str, tmp: Path, redis_url: str, name: str) -> Function:
    code = unpack(zip_path, tmp / name / "task")
    (tmp / name / "cwd").mkdir()
    env = {"TALLY_ENV": "prod", "TALLY_REDIS_URL": redis_url, "TALLY_SPEED_TTL_MINUTE_S": "3600"}
    return Function(code, tmp / name / "cwd", env)


def test_the_unpacked_zip_handles_kinesis_events_against_a_real_redis(
        x86_64_zip: LambdaZip, redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    assert x86_64_zip.c_extension, x86_64_zip.why
    assert x86_64_zip.zipped_bytes <= ZIPPED_DIRECT_LIMIT and x86_64_zip.unzipped_bytes <= UNZIPPED_LIMIT
    datas, _, ledger = generated(GeneratorConfig(seed=31, tenants=6, duration_s=60, rate_per_s=60,
                                                 duplicate_rate=0.03, malformed_rate=0.02))
    events = [kinesis_event(datas[i:i + 400], i) for i in range(0, len(datas), 400)]
    fn = _function(x86_64_zip.path, tmp_path, redis_url, "ok")
    try:
        info = fn.info
        code_dir = str(tmp_path / "ok" / "task")
        assert info["handler_file"].startswith(code_dir) and info["c_extension"] is True
        checkout = str(Path(__file__).resolve().parents[2])
        assert info["path"][0] == code_dir
        assert not any("site-packages" in p or p.startswith(checkout) for p in info["path"][1:])
        assert not {"numpy", "botocore", "boto3", "dagster", "orchestration", "tests"} & set(info["modules"])
        for event in events:
            assert fn(event) == {"batchItemFailures": []}
        assert fn(events[1]) == {"batchItemFailures": []}  # Lambda re-delivers a batch: no double counting
    finally:
        fn.close()
    assert_matches_ledger(redis_client, ledger)
    minute_key = next(redis_client.scan_iter(match="tally:{*}:cnt:m:*"))
    assert 0 < redis_client.ttl(minute_key) <= 3600  # TALLY_SPEED_TTL_MINUTE_S reaches the function


def test_redis_failing_mid_flight_reports_each_shards_first_record(x86_64_zip: LambdaZip, tmp_path: Path) -> None:
    datas, _, _ = generated(GeneratorConfig(seed=32, tenants=3, duration_s=20, rate_per_s=40))
    first, second = kinesis_event(datas[:200], 0), kinesis_event(datas[200:400], 200)
    server = RedisServer(workdir=tmp_path / "redis").start()
    fn = _function(x86_64_zip.path, tmp_path, server.url, "fail")
    try:
        assert fn(first) == {"batchItemFailures": []}
        server.stop()
        failed = fn(second)
        firsts = [next(r["kinesis"]["sequenceNumber"] for r in second["Records"] if r["eventID"].startswith(s)) for s in SHARDS]
        assert failed == {"batchItemFailures": [{"itemIdentifier": seq} for seq in firsts]}
    finally:
        fn.close()
        server.stop()


def _elf_machine(data: bytes) -> int:
    return struct.unpack_from("<H", data, 18)[0]


def test_arm64_takes_the_pure_python_path_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "tally-speed-arm64.zip"
    result = CliRunner().invoke(main, ["package", "lambda", "--arch", "arm64", "--out", str(out)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "pure-Python path: this machine is x86_64 and cannot compile the C extension for arm64" in text
    assert "direct upload limit 52.4 MB: fits" in text and "(limit 262.1 MB with layers: fits)" in text
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        assert manifest["architecture"] == "arm64" and manifest["c_extension"] is False
        libraries = [n for n in zf.namelist() if n.endswith(".so")]
        assert libraries and not any(n.startswith("streaming/") for n in libraries)
        assert {_elf_machine(zf.read(n)) for n in libraries} == {183}  # EM_AARCH64: the wheels are arm64's
