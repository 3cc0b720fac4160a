"""What reconciliation needs besides the shared resources (s3, redis, warehouse): where the speed
consumer's lease checkpoints are, the lateness and tolerance, and where reports go."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import dagster as dg

from streaming.settings import Settings, load_settings


class ReconcileResource(dg.ConfigurableResource):
    home: str
    lease_table: str
    stream_name: str
    region: str
    endpoint_url: str | None = None
    tally_local: bool = True
    speed_group: str = "speed"
    allowed_lateness_s: int = 300
    tolerance_abs: int = 0
    tolerance_rel: float = 0.0
    freshness_stream_s: int = 900
    freshness_speed_s: int = 120
    freshness_archive_s: int = 600
    freshness_warehouse_s: int = 7200
    # What heal's retention needs (TALLY_SPEED_TTL_*_S, TALLY_DEAD_LETTER_TTL_S); None: the default.
    speed_ttl_minute_s: int | None = None
    speed_ttl_hour_s: int | None = None
    speed_ttl_day_s: int | None = None
    dead_letter_ttl_s: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings, endpoint_url: str | None) -> ReconcileResource:
        return cls(home=str(settings.home.resolve()), lease_table=settings.lease_table,
                   stream_name=settings.stream_name, region=settings.aws_region, endpoint_url=endpoint_url,
                   tally_local=settings.is_local, allowed_lateness_s=settings.allowed_lateness_s,
                   tolerance_abs=settings.reconcile_tolerance_abs, tolerance_rel=settings.reconcile_tolerance_rel,
                   freshness_stream_s=settings.freshness_stream_s, freshness_speed_s=settings.freshness_speed_s,
                   freshness_archive_s=settings.freshness_archive_s,
                   freshness_warehouse_s=settings.freshness_warehouse_s,
                   speed_ttl_minute_s=settings.speed_ttl_minute_s, speed_ttl_hour_s=settings.speed_ttl_hour_s,
                   speed_ttl_day_s=settings.speed_ttl_day_s, dead_letter_ttl_s=settings.dead_letter_ttl_s)

    def freshness_slas(self) -> dict[str, float]:
        """Per layer (stream, speed, archive, warehouse), its freshness SLA in seconds."""
        return {"stream": self.freshness_stream_s, "speed": self.freshness_speed_s,
                "archive": self.freshness_archive_s, "warehouse": self.freshness_warehouse_s}

    def settings(self, bucket: str, warehouse: Any) -> Settings:
        """Settings for the reconciliation service, with this resource's values (taken when the
        definitions were built: the environment is not read again here, only tally's defaults)."""
        base = load_settings({})
        path = warehouse.path
        ttls = {name: value for name in ("speed_ttl_minute_s", "speed_ttl_hour_s", "speed_ttl_day_s", "dead_letter_ttl_s")
                if (value := getattr(self, name)) is not None}
        return dataclasses.replace(
            base, home=Path(self.home), lease_table=self.lease_table, stream_name=self.stream_name,
            bucket=bucket, duckdb_path=Path(path) if path else base.duckdb_path,
            allowed_lateness_s=self.allowed_lateness_s,
            reconcile_tolerance_abs=self.tolerance_abs, reconcile_tolerance_rel=self.tolerance_rel, **ttls,
        )

    def dynamodb(self) -> Any:
        return self._aws("dynamodb")

    def kinesis(self) -> Any:
        return self._aws("kinesis")

    def _aws(self, service: str) -> Any:
        from streaming.aws import aws_client

        if self.tally_local and not self.endpoint_url:
            from streaming.endpoints import NO_EMULATOR, StackNotRunning

            raise StackNotRunning(NO_EMULATOR)
        return aws_client(service, self.region, self.endpoint_url)

    def layers(self, s3: Any, redis: Any, warehouse: Any) -> Any:
        """The service's view of the layers from the shared resources."""
        from streaming.reconcile.service import Layers

        return Layers(s3=s3.get_client(), bucket=s3.bucket, redis=redis.client(),
                      warehouse=warehouse.reader(), dynamodb=self.dynamodb(),
                      lease_table=self.lease_table, stream_name=self.stream_name, speed_group=self.speed_group,
                      kinesis=self.kinesis())
