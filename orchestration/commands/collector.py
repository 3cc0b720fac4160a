"""`tally collect`: the collector (Segment HTTP Tracking API -> write-ahead spool -> Kinesis)."""

from __future__ import annotations

from pathlib import Path

import click

from streaming.settings import Settings


def register(main: click.Group) -> None:
    """Add this domain's commands to the `tally` group."""
    from orchestration.cli import _settings, console, user_errors

    @main.command()
    @click.option("--host", default=None, help="Address to listen on (default TALLY_COLLECTOR_HOST, loopback).")
    @click.option("--port", type=int, default=None, help="Port (default TALLY_COLLECTOR_PORT, else 8088).")
    @click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                  help="Spool and instance id (default TALLY_COLLECTOR_STATE_DIR, else $TALLY_HOME/collector); "
                       "one per collector process.")
    @user_errors
    def collect(host: str | None, port: int | None, state_dir: Path | None) -> None:
        """Run a collector: SDKs send to http://HOST:PORT/v1/batch with a write key (`tally keys create --kind write`)."""
        import logging
        from dataclasses import replace

        from orchestration.environment import resolve_endpoints
        from streaming.collector.run import DEFAULT_PORT, serve

        settings = _settings()
        if state_dir is not None:
            settings = replace(settings, collector=replace(settings.collector, state_dir=state_dir))
        host = host or settings.collector.host
        port = port or settings.collector.port or DEFAULT_PORT
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        console.print(f"tally collector on http://{host}:{port} (POST /v1/batch, /v1/track, ...), spool in "
                      f"{settings.collector.state_dir}, stream {settings.stream_name}")
        endpoints = resolve_endpoints(settings)
        serve(settings, host, port, urls={s: endpoints.aws_url(s) for s in ("kinesis", "dynamodb")})


def create_write_key(settings: Settings, tenant: str) -> str:
    """A write key for ``tenant`` in the write-key table (created if missing)."""
    from orchestration.environment import resolve_endpoints
    from streaming.aws import aws_client
    from streaming.collector.writekeys import create_write_key as create

    dynamodb = aws_client("dynamodb", settings.aws_region, resolve_endpoints(settings).aws_url("dynamodb"))
    return create(dynamodb, settings.collector.write_key_table, tenant)
