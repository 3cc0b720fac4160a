"""deploy/tally.yaml: cfn-lint clean, consistent with the planner and the settings, and deployable on the
embedded AWS emulator, where tally's producer, archiver and consumer then run against its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.aws import aws_client
from streaming.deploy.lambda_zip import LambdaZip
from streaming.deploy.template import OUTPUT_SETTINGS, TEMPLATE, load_template
from streaming.generator import Ledger
from streaming.plan.capacity import ALARMS
from streaming.settings import SETTINGS
from tests.conftest import REGION, unique_name
from tests.speed.conftest import assert_matches_ledger


@pytest.mark.unit
def test_cfn_lint_passes() -> None:
    lint = Path(sys.executable).with_name("cfn-lint")
    proc = subprocess.run([str(lint), str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.unit
def test_template_matches_the_planner_the_handler_and_the_settings() -> None:
    template = load_template()
    resources = template["Resources"]
    by_type = Counter(r["Type"] for r in resources.values())
    assert by_type["AWS::CloudWatch::Alarm"] == ALARMS  # the planner prices this many
    described = {key: out["Description"] for key, out in template["Outputs"].items() if out["Description"].startswith("TALLY_")}
    assert described == OUTPUT_SETTINGS
    known = {s.name for s in SETTINGS}
    assert set(OUTPUT_SETTINGS.values()) - known <= {"TALLY_WRITE_KEY_TABLE"}  # the collector's setting (its own branch)
    mapping = resources["SpeedEventSourceMapping"]["Properties"]
    assert mapping["ParallelizationFactor"] == 1 and mapping["BisectBatchOnFunctionError"] is True
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "OnFailure" in mapping["DestinationConfig"]
    handler = resources["SpeedFunction"]["Properties"]["Handler"]
    module, name = handler.rsplit(".", 1)
    assert callable(getattr(__import__(module, fromlist=[name]), name))
    rules = resources["ArchiveBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    raw = [r for r in rules if r.get("Prefix", "").startswith("raw") or not r.get("Prefix")]
    assert raw and not any("ExpirationInDays" in r or "NoncurrentVersionExpiration" in r for r in raw)


def _deploy(cfn: Any, s3: Any, name: str, code: LambdaZip, redis_url: str, plan_params: Path) -> dict[str, str]:
    bucket = unique_name("code")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(code.path, bucket, "tally-speed.zip")
    params = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(plan_params.read_text())}
    params |= {"Target": "emulator", "RedisUrl": redis_url, "LambdaCodeBucket": bucket, "LambdaCodeKey": "tally-speed.zip"}
    cfn.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return params


def _tally(args: list[str], env: dict[str, str], timeout: int = 300) -> str:
    proc = subprocess.run([str(Path(sys.executable).with_name("tally")), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"tally {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_the_stack_deploys_on_the_emulator_and_tally_runs_against_its_outputs(
        aws_endpoint: str, redis_url: str, redis_client: redis.Redis, x86_64_zip: LambdaZip, tmp_path: Path,
        servers_dir: Path) -> None:
    home = tmp_path / "home"
    base = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    base |= {"TALLY_HOME": str(home), "TALLY_AWS_ENDPOINT_URL": aws_endpoint, "TALLY_AWS_REGION": REGION}
    params = tmp_path / "params.json"
    _tally(["plan", "--preset", "startup", "--arch", "x86_64", "--emit-params", str(params)], base)
    cfn, s3 = aws_client("cloudformation", REGION, aws_endpoint), aws_client("s3", REGION, aws_endpoint)
    stack = unique_name("tally")
    deployed = _deploy(cfn, s3, stack, x86_64_zip, redis_url, params)

    # The settings of TALLY_ENV=prod, from the stack's outputs, as `tally deploy env` prints them.
    env_json = json.loads(_tally(["deploy", "env", "--stack", stack, "--format", "json"], base))
    assert env_json["TALLY_ENV"] == "prod" and env_json["TALLY_STREAM_NAME"] == f"{stack}-events"
    prod = base | env_json | {"TALLY_REDIS_URL": redis_url}  # ElastiCache is not in the emulator: the fixture's Redis
    missing = subprocess.run([str(Path(sys.executable).with_name("tally")), "deploy", "env", "--stack", "no-such-stack"],
                             env=base, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--stack='no-such-stack' is not a stack" in " ".join(missing.stderr.split())

    # What the stack made is what the plan and the template say.
    kinesis = aws_client("kinesis", REGION, aws_endpoint)
    shards = kinesis.list_shards(StreamName=prod["TALLY_STREAM_NAME"])["Shards"]
    assert deployed["StreamMode"] == "PROVISIONED" and len(shards) == int(deployed["ShardCount"])
    # moto's CloudFormation applies a bucket's encryption (not its public access block or lifecycle, which the
    # template test and cfn-lint check).
    rules = s3.get_bucket_encryption(Bucket=prod["TALLY_BUCKET"])["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    function = aws_client("lambda", REGION, aws_endpoint).get_function_configuration(FunctionName=f"{stack}-speed")
    assert function["Handler"] == "streaming.speed.lambda_handler.handler" and function["Architectures"] == ["x86_64"]
    assert function["Environment"]["Variables"]["TALLY_STREAM_NAME"] == prod["TALLY_STREAM_NAME"]

    # Producer -> stream; archiver -> the stack's bucket and lease table; consumer -> Redis.
    run = tmp_path / "run"
    _tally(["generate", "--seed", "17", "--tenants", "12", "--duration-s", "60", "--rate", "80", "--malformed", "0.01",
            "--start", "2026-06-01T10:00:00Z", "--out", str(run), "--to-stream"], prod)
    _tally(["archive", "--until-caught-up", "--timeout-s", "240"], prod)
    _tally(["consume", "--until-caught-up", "--timeout-s", "240"], prod)

    # With the stack's event source mapping on the stream, unpatched moto tried to run the function in Docker
    # for every record put (2,500 records took 13.6 s instead of 0.16 s); the emulator defines, never runs, it.
    assert "error running docker" not in (servers_dir / "emulator.log").read_text(errors="replace")
    ledger = Ledger.load(run / "ledger.json")
    assert_matches_ledger(redis_client, ledger)
    counted: Counter[tuple[str, str, str]] = Counter()
    dead: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prod["TALLY_BUCKET"], Prefix="raw/manifests/"):
        for obj in page.get("Contents", []):
            manifest = json.loads(s3.get_object(Bucket=prod["TALLY_BUCKET"], Key=obj["Key"])["Body"].read())
            dead.update(manifest["dead_letters"])
            for entry in manifest["objects"]:
                for tenant, etype, minute, n in entry["counts"]:
                    counted[(tenant, etype, minute)] += n
    assert dict(dead) == ledger.dead_letters
    assert dict(counted) == {(t, e, m): n for t, e, m, n in ledger.count_rows()}
    leases = aws_client("dynamodb", REGION, aws_endpoint).scan(TableName=prod["TALLY_LEASE_TABLE"])["Items"]
    groups = {item["lease_key"]["S"].split("#")[0] for item in leases}
    assert {"archiver", "speed"} <= groups  # both readers kept their leases in the stack's table
