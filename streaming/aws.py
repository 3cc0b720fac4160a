"""boto3 clients for Kinesis, S3 and DynamoDB, pointed at the local emulator or at real AWS.

Credentials come from the standard chain. Against the loopback emulator only, fixed placeholder
credentials are used when none are set, because the emulator accepts any and a developer should not
need an AWS profile to run the embedded default.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

_LOCAL_PLACEHOLDER = {"aws_access_key_id": "tally-local", "aws_secret_access_key": "tally-local"}


def client_config(max_pool: int = 32) -> Config:
    return Config(
        retries={"max_attempts": 8, "mode": "standard"},
        max_pool_connections=max_pool,
        connect_timeout=5,
        read_timeout=30,
        tcp_keepalive=True,
    )


def aws_client(service: str, region: str, endpoint_url: str | None = None, max_pool: int = 32,
               config: Config | None = None) -> Any:
    """A boto3 client; ``endpoint_url`` set means the emulator (or another AWS-compatible endpoint)."""
    kwargs: dict[str, Any] = {"region_name": region, "config": config or client_config(max_pool)}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
        if not os.environ.get("AWS_ACCESS_KEY_ID") and _is_loopback(endpoint_url):
            kwargs.update(_LOCAL_PLACEHOLDER)
    client = boto3.session.Session().client(service, **kwargs)
    client.meta.events.register("after-call-error", _tag_error(service))
    return client


def _tag_error(service: str) -> Any:
    """botocore's ``after-call-error`` hook: mark a failed call's exception with the service and the
    operation, so the one sentence a user reads (:mod:`streaming.outages`) names them."""

    def tag(exception: BaseException | None = None, event_name: str = "", **_: Any) -> None:
        if exception is not None:
            try:
                exception.tally_service = service  # type: ignore[attr-defined]
                exception.tally_operation = event_name.rsplit(".", 1)[-1]  # type: ignore[attr-defined]
            except AttributeError:
                pass

    return tag


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")
