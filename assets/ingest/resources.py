"""The ingest domain's resource: which Kinesis stream the layers read."""

from typing import Any

import dagster as dg


class StreamConfig(dg.ConfigurableResource):
    """Which Kinesis stream the layers read (a resource so tests and environments can differ)."""

    stream_name: str
    region: str
    endpoint_url: str | None = None
    tally_local: bool = False

    def client(self) -> Any:
        from streaming.aws import aws_client

        endpoint = self.endpoint_url
        if self.tally_local and not endpoint:
            from streaming.settings import load_settings
            from streaming.stack.manager import resolve_endpoints

            endpoint = resolve_endpoints(load_settings()).aws_url("kinesis")
        return aws_client("kinesis", self.region, endpoint)
