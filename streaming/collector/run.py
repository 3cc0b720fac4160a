"""Assemble and run one collector process: settings -> spool, write keys, drainer, HTTP server.

``tally collect`` and ``tally stack up`` run ``python -m streaming.collector.run``. The server is uvicorn
(httptools, uvloop), one process: the spool, its numbering and its drainer belong to one process; run
more collectors (each with its own ``TALLY_COLLECTOR_STATE_DIR``) behind a load balancer to use more
cores. Why uvicorn and not granian: README, "The collector".
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from botocore.config import Config

from streaming.aws import aws_client
from streaming.metrics import serve_for
from streaming.collector.app import CollectorApp, Limits
from streaming.collector.drainer import Drainer
from streaming.collector.exporter import MetricsExporter
from streaming.collector.forward import Forwarder, forward_spool
from streaming.collector.segment import EventMap
from streaming.collector.spool import Spool
from streaming.collector.writekeys import WriteKeys, scan_table
from streaming.settings import Settings, SettingError, load_settings, redact_url

log = logging.getLogger("tally.collector")
DEFAULT_PORT = 8088


def aws_endpoint(settings: Settings, service: str = "kinesis") -> str | None:
    """``service``'s endpoint from the settings' variables (``tally stack up`` sets them for the collector
    process it starts). Never Redis: the collector does not need it, so it does not ask for it."""
    from streaming.endpoints import from_variables

    return from_variables(settings).aws_url(service)


def _client(service: str, settings: Settings, endpoint: str | None, attempts: int) -> Any:
    """Few botocore retries: the drainer and the key refresh have their own loops, and a call stuck in
    botocore's backoff would delay noticing that Kinesis is back."""
    return aws_client(service, settings.aws_region, endpoint, config=Config(
        retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=2, read_timeout=20,
        max_pool_connections=4, tcp_keepalive=True))


def build_app(settings: Settings, endpoint: str | None | dict[str, str | None], kinesis: Any = None,
              clock: Callable[[], float] = time.time) -> CollectorApp:
    """The collector for these settings; its spool is recovered and its drainer started at ASGI startup.
    ``kinesis`` and ``clock`` replace the drainer's client and ``received_at``'s clock (tests only)."""
    c = settings.collector
    try:
        event_map = EventMap.load(c.event_map)
    except ValueError as exc:
        raise SettingError("TALLY_COLLECTOR_EVENT_MAP", c.event_map, f"is not a valid event map ({exc})",
                           "fix the file: {tenant: {track event name: click | form_submit}}, '*' for every tenant") from None
    spool = Spool(c.state_dir, c.spool_max_bytes, fsync=c.fsync == "always")
    forward = forward_spool(c.state_dir, c.forward_max_bytes, fsync=c.fsync == "always") if c.forward_url else None
    forwarder: list[Forwarder] = []
    urls = endpoint if isinstance(endpoint, dict) else {"kinesis": endpoint, "dynamodb": endpoint}
    kinesis = kinesis or _client("kinesis", settings, urls["kinesis"], attempts=2)
    dynamodb = _client("dynamodb", settings, urls["dynamodb"], attempts=2)
    keys = WriteKeys(lambda: scan_table(dynamodb, c.write_key_table), c.state_dir / "write_keys.json", c.keys_refresh_s)
    drainer: list[Drainer] = []

    exporter: list[MetricsExporter] = []

    def start(app: CollectorApp) -> None:
        spool.open()
        keys.start()
        drainer.append(Drainer(spool, kinesis, settings.stream_name).start())
        if forward is not None and c.forward_url is not None:
            forward.open()
            forwarder.append(Forwarder(forward, c.forward_url, max_backoff_s=c.forward_max_backoff_s,
                                       timeout_s=c.forward_timeout_s).start())
            log.info("collector %s: forwarding every accepted request to %s (%d bytes waiting)", spool.source_id,
                     redact_url(c.forward_url), forward.depth_bytes())
        if not settings.metrics_off:
            serve_for("collector", settings)
            exporter.append(MetricsExporter(app, status).start())
        log.info("collector %s: spool %s (%d bytes to drain), %d write keys from %s, stream %s",
                 spool.source_id, spool.dir, spool.depth_bytes(), len(keys._keys), keys.loaded_from, settings.stream_name)

    def stop(app: CollectorApp) -> None:
        for e in exporter:
            e.stop()
        keys.stop()
        for d in drainer:
            d.stop()
        for f in forwarder:
            f.stop()
        spool.close()
        if forward is not None:
            forward.close()

    def status() -> dict[str, Any]:
        out = spool.status()
        if drainer:
            out["drainer"] = {"records_sent": drainer[0].stats.records_sent, "failures": drainer[0].stats.failures,
                              "last_error": drainer[0].stats.last_error}
        if forward is not None and forwarder:
            out["forward"] = {**forwarder[0].stats.as_dict(), "depth_bytes": forward.depth_bytes(),
                              "max_bytes": forward.max_bytes, "dropped": app_counts().get("forward_dropped", 0)}
        return out

    limits = Limits(c.max_batch_bytes, c.max_message_bytes, settings.max_event_bytes, c.retry_after_s)
    app = CollectorApp(spool, keys, event_map, limits, start, stop, status, clock, forward=forward)

    def app_counts() -> dict[str, int]:
        return app.counts

    return app


def uvicorn_server(app: Any, host: str, port: int) -> Any:
    """The server the collector runs under (also what its benchmark measures)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                         lifespan="on", loop="uvloop", http="httptools", backlog=2048,
                                         timeout_keep_alive=30))


def serve(settings: Settings, host: str, port: int, kinesis: Any = None,
          urls: dict[str, str | None] | None = None) -> None:
    """``urls``: the Kinesis and DynamoDB endpoints as the caller resolved them; None: the variables."""
    urls = urls or {service: aws_endpoint(settings, service) for service in ("kinesis", "dynamodb")}
    server = uvicorn_server(build_app(settings, urls, kinesis=kinesis), host, port)
    log.info("collector listening on http://%s:%d", host, port)
    server.run()
    if not server.started:
        sys.exit(3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="tally's collector (Segment HTTP Tracking API)")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = load_settings()
        if args.state_dir is not None:
            settings = replace(settings, collector=replace(settings.collector, state_dir=args.state_dir))
        serve(settings, args.host or settings.collector.host, args.port or settings.collector.port or DEFAULT_PORT)
    except SettingError as exc:
        print(f"tally: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
