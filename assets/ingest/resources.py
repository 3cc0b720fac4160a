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

        if self.tally_local and not self.endpoint_url:
            from streaming.endpoints import NO_EMULATOR, StackNotRunning

            raise StackNotRunning(NO_EMULATOR)
        return aws_client("kinesis", self.region, self.endpoint_url)
