"""The Kinesis stream (observed) and the S3 raw archive the archiver writes from it (external)."""


from typing import Any

import dagster as dg

STREAM_KEY = dg.AssetKey(["stream", "kinesis_events"])
ARCHIVE_KEY = dg.AssetKey(["archive", "raw_events_archive"])


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


@dg.observable_source_asset(key=STREAM_KEY, group_name="stream",
                            description="The Kinesis stream every layer reads: SDK collectors write to it.")
def kinesis_events(stream: StreamConfig) -> dg.ObserveResult:
    summary = stream.client().describe_stream_summary(StreamName=stream.stream_name)["StreamDescriptionSummary"]
    return dg.ObserveResult(metadata={
        "stream": stream.stream_name,
        "status": summary["StreamStatus"],
        "open_shards": int(summary.get("OpenShardCount", 0)),
        "retention_hours": int(summary.get("RetentionPeriodHours", 24)),
    })


raw_events_archive = dg.AssetSpec(
    key=ARCHIVE_KEY,
    deps=[STREAM_KEY],
    group_name="archive",
    description=(
        "Every stream record, valid or not, as gzip JSON lines in S3 `raw/events/dt=/hour=/<shard>/`, with a "
        "manifest per shard batch (`raw/manifests/`). Written by the archiver (`tally archive`), outside Dagster."
    ),
    metadata={"layout": "raw/events/dt=YYYY-MM-DD/hour=HH/<shard_id>/<first_seq>-<last_seq>.jsonl.gz"},
    kinds={"s3"},
)


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[kinesis_events, raw_events_archive])
