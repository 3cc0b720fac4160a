"""Dagster resources, chosen by the environment when the definitions are built."""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from assets.warehouse.resources import build_warehouse
from orchestration.environment import Environment

_LOCAL_PLACEHOLDER_KEY = "tally-local"  # the emulator accepts any credentials; not a secret


class TallyS3Resource(S3Resource):
    """dagster-aws's S3 resource plus the archive's bucket. Locally, when no endpoint was known at
    build time (stack down), it asks the stack for it when a run first needs the client."""

    bucket: str
    tally_local: bool = False

    def get_client(self) -> Any:
        if self.tally_local and not self.endpoint_url:
            from streaming.settings import load_settings
            from streaming.stack.manager import resolve_endpoints

            endpoint = resolve_endpoints(load_settings()).aws_url("s3")
            return self.model_copy(update={"endpoint_url": endpoint}).get_client()
        return super().get_client()

    def archive_store(self) -> Any:
        from streaming.archive.store import ArchiveStore

        return ArchiveStore(self.get_client(), self.bucket)


class RedisResource(dg.ConfigurableResource):
    """The speed layer's Redis (observed only: the batch layer never writes to it)."""

    url: str | None = None

    def client(self) -> Any:
        import redis

        url = self.url
        if url is None:
            from streaming.settings import load_settings
            from streaming.stack.manager import resolve_endpoints

            url = resolve_endpoints(load_settings()).redis_url
        return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)


def build_resources(environment: Environment) -> dict[str, Any]:
    """The resources several domains share: the archive's S3, the speed layer's Redis, the warehouse."""
    settings = environment.settings
    local_loopback = environment.is_local
    s3 = TallyS3Resource(
        bucket=settings.bucket,
        region_name=settings.aws_region,
        endpoint_url=environment.aws_endpoint("s3"),
        tally_local=local_loopback,
        aws_access_key_id=_LOCAL_PLACEHOLDER_KEY if local_loopback else None,
        aws_secret_access_key=_LOCAL_PLACEHOLDER_KEY if local_loopback else None,
    )
    # SettingError names a missing TALLY_SNOWFLAKE_* when definitions are built.
    warehouse = build_warehouse(settings)
    return {
        "s3": s3,
        "redis": RedisResource(url=environment.redis_url),
        "warehouse": warehouse,
    }
