"""Secrets (API keys, Snowflake password and key passphrase, the AWS secret key, the privacy salt) and the
forgotten user id never appear in command output, logs, Dagster run records and metadata, HTTP answers,
reports or the audit records."""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import redis
from starlette.testclient import TestClient

from streaming.aws import aws_client
from streaming.query.apikeys import create_key
from streaming.query.http import Privacy, create_app
from streaming.resources import ensure_bucket, ensure_lease_table, ensure_stream
from streaming.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.dagster]

SECRETS = {
    "TALLY_SNOWFLAKE_PASSWORD": "sf-password-Q7zr4Kx9",
    "TALLY_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "sf-passphrase-Lm3Vt8Wq",
    "TALLY_PRIVACY_SALT": "privacy-salt-Hd6Yp2Nc",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-Zt5Gb1Rk",
}
#: Not a secret (an identifier botocore's debug log shows in the Authorization header), set so the secret
#: key is the one in use.
ACCESS_KEY_ID = "AKIAFAKEPRIVACYTEST"
USER = "user-secret-person-8f3a"


def _tally(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("tally")), *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_secrets_and_the_user_id_stay_out_of_every_output(tally_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                          redis_client: redis.Redis, caplog: pytest.LogCaptureFixture,
                                                          tmp_path: Path) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    env = dict(os.environ)
    settings = load_settings()
    s3 = aws_client("s3", settings.aws_region, settings.aws_endpoint_url)
    ensure_bucket(s3, settings.bucket, settings.aws_region)
    ensure_stream(aws_client("kinesis", settings.aws_region, settings.aws_endpoint_url), settings.stream_name, 1)
    ensure_lease_table(aws_client("dynamodb", settings.aws_region, settings.aws_endpoint_url), settings.lease_table)
    api_key = create_key(redis_client, "tenant-a")
    secrets = [*SECRETS.values(), api_key]
    outputs: dict[str, str] = {}
    caplog.set_level(logging.DEBUG)

    # The command line, the success and the error paths.
    runs = {
        "settings": _tally("settings", env=env),
        "forget": _tally("forget", "--tenant", "tenant-a", "--user", USER, "--no-rebuild", env=env),
        "forget-bad": _tally("forget", "--tenant", "tenant-a{", "--user", USER, env=env),
        "queue": _tally("forget", "--tenant", "tenant-a", "--user", USER + "-2", "--queue", "--json", env=env),
        "list": _tally("forget", "--list", env=env),
        "reconcile": _tally("reconcile", "--hours", "1", "--exit-zero", env=env),
    }
    for name, proc in runs.items():
        outputs[f"cli {name}"] = proc.stdout + proc.stderr
    assert runs["forget"].returncode == 0, outputs["cli forget"]
    assert runs["forget-bad"].returncode == 2 and "Traceback" not in runs["forget-bad"].stderr
    request_id = next(w for w in runs["forget"].stdout.split() if w.startswith("fr_"))
    outputs["cli status"] = _tally("forget", "--status", request_id, "--json", env=env).stdout
    assert '"status": "done"' in outputs["cli status"]

    # Dagster: the queued request through the forget_job; its run config, logs and metadata.
    import json

    queued = json.loads(runs["queue"].stdout)
    from orchestration.definitions import build_definitions

    instance = dg.DagsterInstance.ephemeral()
    result = build_definitions().resolve_job_def("forget_job").execute_in_process(
        instance=instance, run_config={"ops": {"forget_request": {"config": {
            "tenant": "tenant-a", "request_id": queued["request_id"]}}}})
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    outputs["dagster run"] = repr(run) + repr([e for e in instance.all_logs(result.run_id)])
    assert "forgotten_lines" in outputs["dagster run"]

    # HTTP answers, including errors.
    client = TestClient(create_app(redis_client, Privacy()))
    auth = {"Authorization": f"Bearer {api_key}"}
    answers = [client.post("/v1/tenants/tenant-a/forget", json={"user_id": USER + "-3"}, headers=auth),
               client.get(f"/v1/tenants/tenant-a/forget/{request_id}", headers=auth),
               client.get("/v1/tenants/tenant-b/counts", headers=auth), client.get("/v1/tenants/tenant-a/counts"),
               client.post("/v1/tenants/tenant-a/forget", content=b"{not json", headers=auth)]
    outputs["http"] = "\n".join(a.text + repr(dict(a.headers)) for a in answers)

    # Everything stored in the bucket (audit records, reports) and every log record of this process.
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=settings.bucket, Key=item["Key"])["Body"].read()
            outputs[f"s3 {item['Key']}"] = (gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body).decode("utf-8", "replace")
    reports = settings.home / "reports"
    for path in reports.glob("*") if reports.exists() else []:
        outputs[f"report {path.name}"] = path.read_text(errors="replace")
    outputs["logs"] = "\n".join(r.getMessage() for r in caplog.records)

    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in {where}"
        if not where.startswith("s3 privacy/work/"):  # an unfinished request's own work object holds it
            assert USER not in text, f"the user id appears in {where}"
    assert any(k.startswith("s3 audit/forget/tenant-a/") for k in outputs)
