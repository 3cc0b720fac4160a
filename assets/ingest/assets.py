"""The Kinesis stream (observed) and the S3 raw archive the archiver writes from it (external)."""


import dagster as dg

from assets.ingest.keys import ARCHIVE_KEY, STREAM_KEY
from assets.ingest.resources import StreamConfig


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
