"""The ingest domain's asset keys (the stream and the archive), the one place they are spelled."""

import dagster as dg

STREAM_KEY = dg.AssetKey(["stream", "kinesis_events"])
ARCHIVE_KEY = dg.AssetKey(["archive", "raw_events_archive"])
