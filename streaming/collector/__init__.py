"""The collector: SDKs' events over HTTP (the Segment Tracking API) into Kinesis, acknowledged only once
spooled on disk (``app`` the HTTP front, ``spool`` and ``drainer`` the durable hand-off to Kinesis,
``writekeys`` the tenants' write keys, ``run`` the process)."""
