"""Create the AWS resources tally needs (stream, bucket, lease table) if they are missing.

Locally ``tally stack up`` calls this against the emulator; in production the same function can be run
once by an operator with permission to create them (or the resources are made by infrastructure code).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError


@dataclass(frozen=True)
class ResourceNames:
    stream: str
    shards: int
    bucket: str
    lease_table: str


def ensure_stream(kinesis: Any, name: str, shards: int, timeout_s: float = 30) -> None:
    try:
        kinesis.create_stream(StreamName=name, ShardCount=shards)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        if status in ("ACTIVE", "UPDATING"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"Kinesis stream {name} not ACTIVE after {timeout_s}s")


def ensure_bucket(s3: Any, name: str, region: str) -> None:
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def ensure_lease_table(dynamodb: Any, name: str) -> None:
    """Lease table: one item per (consumer group, shard), conditional writes give fencing."""
    try:
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "lease_key", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "lease_key", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def ensure_all(kinesis: Any, s3: Any, dynamodb: Any, names: ResourceNames, region: str) -> None:
    ensure_stream(kinesis, names.stream, names.shards)
    ensure_bucket(s3, names.bucket, region)
    ensure_lease_table(dynamodb, names.lease_table)
