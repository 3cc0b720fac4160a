"""What the ingest domain adds to the Definitions root: the stream (observed), the archive (external)
and the ``stream`` resource."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets.ingest.assets import kinesis_events, raw_events_archive
from assets.ingest.resources import StreamConfig

if TYPE_CHECKING:
    from orchestration.environment import Environment


def defs(environment: Environment) -> dg.Definitions:
    settings = environment.settings
    stream = StreamConfig(stream_name=settings.stream_name, region=settings.aws_region,
                          endpoint_url=environment.aws_endpoint("kinesis"), tally_local=environment.is_local)
    return dg.Definitions(assets=[kinesis_events, raw_events_archive], resources={"stream": stream})
