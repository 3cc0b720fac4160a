"""Dagster resources, chosen by the environment when the definitions are built."""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from assets.warehouse.resources import build_warehouse
from orchestration.environment import Environment
from streaming.endpoints import NO_EMULATOR, NO_REDIS, StackNotRunning

_LOCAL_PLACEHOLDER_KEY = "tally-local"  # the emulator accepts any credentials; not a secret


class TallyS3Resource(S3Resource):
    """dagster-aws's S3 resource plus the archive's bucket. Its endpoint was resolved when the
    definitions were built (each run's process builds them again, so a stack started since is seen);
    locally without one, a run fails with the sentence that says to start the stack."""

    bucket: str
    tally_local: bool = False

    def get_client(self) -> Any:
        if self.tally_local and not self.endpoint_url:
            raise StackNotRunning(NO_EMULATOR)
        return super().get_client()

    def archive_store(self) -> Any:
        from streaming.archive.store import ArchiveStore

        return ArchiveStore(self.get_client(), self.bucket)


class RedisResource(dg.ConfigurableResource):
    """The speed layer's Redis (observed only: the batch layer never writes to it); its URL was resolved
    when the definitions were built."""

    url: str | None = None

    def client(self) -> Any:
        import redis

        if self.url is None:
            raise StackNotRunning(NO_REDIS)
        return redis.Redis.from_url(self.url, socket_connect_timeout=3, socket_timeout=5)


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
