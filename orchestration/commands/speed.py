"""`tally` subcommands of the speed layer: consume, dead-letters, query, serve, keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

UTC = dt.timezone.utc


def _redis(settings: Any) -> Any:
    from streaming.speed.connect import connect
    from orchestration.environment import resolve_endpoints

    return connect(resolve_endpoints(settings).redis_url)


def _privacy(settings: Any) -> Any:
    """The query API's deletion requests, with the endpoints resolved here (built on first use)."""
    from streaming.query.http import Privacy

    class StackPrivacy(Privacy):
        @property
        def eraser(self) -> Any:
            if self._eraser is None:
                from orchestration.environment import resolve_endpoints
                from streaming.privacy.service import eraser_from_settings

                self._eraser = eraser_from_settings(settings, endpoints=resolve_endpoints(settings))
            return self._eraser

    return StackPrivacy()


def _utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _range(minutes: int, end: str | None) -> tuple[dt.datetime, dt.datetime]:
    stop = dt.datetime.now(UTC) if end is None else dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
    if stop.tzinfo is None:
        stop = stop.replace(tzinfo=UTC)
    return stop - dt.timedelta(minutes=minutes), stop


def query_errors(fn: Any) -> Any:
    """A bad tenant id, range or segment name is a usage error (exit 2, one line), not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from streaming.query.api import QueryError
        from streaming.speed.keys import BadTenant

        from streaming.literal import printable
        from streaming.settings import SettingError

        try:
            return fn(*args, **kwargs)
        except SettingError:
            raise  # a setting, not usage: the group's one sentence, not a usage block
        except (QueryError, BadTenant, ValueError) as exc:
            raise click.UsageError(printable(str(exc))) from None

    return wrapper


def _dead_letter_tenant(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from streaming.speed.deadletters import tag_of
    from streaming.speed.keys import BadTenant

    try:
        return None if value is None else tag_of(value)
    except BadTenant as exc:
        raise click.BadParameter(str(exc)) from None


def register(main: click.Group) -> None:
    """Add this domain's commands to the `tally` group."""
    from orchestration.cli import _settings, user_errors
    from orchestration.output import cell, console, echo_json, format_option, plain_line, print_rows, resolved
    from streaming.literal import printable

    range_options = [
        click.option("--minutes", default=60, show_default=True, help="Length of the range, ending at --end."),
        click.option("--end", default=None, help="End of the range (ISO-8601, UTC); default now."),
    ]

    def with_range(fn: Any) -> Any:
        for option in reversed(range_options):
            fn = option(fn)
        return fn

    # -- consume ---------------------------------------------------------------------------------
    @main.command()
    @click.option("--group", default="speed", show_default=True, help="Consumer group (leases and markers).")
    @click.option("--worker-id", default="", help="Worker id in the lease table (default host-pid-random).")
    @click.option("--until-caught-up", is_flag=True, help="Stop once every shard is read to its end.")
    @click.option("--timeout-s", default=600.0, show_default=True, help="With --until-caught-up: give up after this.")
    @user_errors
    def consume(group: str, worker_id: str, until_caught_up: bool, timeout_s: float) -> None:
        """Run the speed-layer consumer: stream -> exactly-once counters in Redis.

        Without --until-caught-up it runs until SIGTERM/Ctrl-C and waits out services that are down
        (at start too), logging one line per retry; with it, a service that is down is an error (exit 2).
        """
        from orchestration.environment import locate_endpoints, resolve_endpoints
        from streaming.logs import configure
        from streaming.speed.run import ConsumerOptions, run_consumer

        settings = _settings()
        configure("speed", settings)
        worker = run_consumer(settings, ConsumerOptions(group=group, worker_id=worker_id), until_caught_up, timeout_s,
                              resolve=lambda: resolve_endpoints(settings), locate=locate_endpoints)
        lag = worker.lag() if worker is not None else {}
        console.print(f"consumer {getattr(worker, 'worker_id', worker_id) or ''} stopped; MillisBehindLatest per shard: "
                      + (", ".join(f"{s}={ms}" for s, ms in sorted(lag.items())) or "no shards read"))

    # -- dead letters ----------------------------------------------------------------------------
    @main.group("dead-letters")
    def dead_letters() -> None:
        """Records that failed validation: list them, re-feed them after a fix."""

    @dead_letters.command("list")
    @click.option("--reason", default=None, help="Only this rejection reason.")
    @click.option("--limit", default=20, show_default=True)
    @click.option("--tenant", default=None, callback=_dead_letter_tenant,
                  help="Only this tenant's (`_unattributed`: records naming no valid tenant).")
    @format_option()
    @user_errors
    def dl_list(reason: str | None, limit: int, tenant: str | None, fmt: str | None) -> None:
        """Counts per reason, then the oldest pending dead letters (raw bytes shown literally)."""
        import base64

        from streaming.speed import deadletters

        client = _redis(_settings())
        totals, replayed = deadletters.counts(client, tenant), deadletters.replayed_counts(client, tenant)
        entries = deadletters.list_pending(client, reason, limit, tenant)
        fmt = resolved(fmt)
        if fmt == "json":
            echo_json({"counts": {r: {"dead_letters": totals[r], "replayed": replayed.get(r, 0)} for r in sorted(totals)},
                       "pending": [{"entry": e.entry_id, "reason": e.reason, "detail": e.detail, "shard": e.shard_id,
                                    "sequence_number": e.sequence_number, "bytes": len(e.raw),
                                    "raw": _utf8_or_none(e.raw), "raw_base64": base64.b64encode(e.raw).decode()}
                                   for e in entries]})
            return
        print_rows(fmt, "reason", ("reason", "dead letters", "replayed"),
                   ((r, totals[r], replayed.get(r, 0)) for r in sorted(totals)), title="dead letters")
        console.print(f"{sum(totals.values()):,} dead letters, {sum(totals.values()) - sum(replayed.values()):,} pending")
        shown = 200 if fmt == "table" else None  # a table shows the start of each payload; plain shows it whole
        print_rows(fmt, "dead_letter", ("entry (shard/sequence)", "reason", "detail", "bytes", "raw"),
                   ((e.entry_id, e.reason, e.detail, len(e.raw), e.raw[:shown]) for e in entries))

    @dead_letters.command("replay")
    @click.option("--reason", default=None, help="Only this rejection reason.")
    @click.option("--limit", default=10_000, show_default=True)
    @click.option("--all", "replay_all", is_flag=True, help="Also re-feed records the current decoder still rejects.")
    @click.option("--tenant", default=None, callback=_dead_letter_tenant,
                  help="Only this tenant's (`_unattributed`: records naming no valid tenant).")
    @user_errors
    def dl_replay(reason: str | None, limit: int, replay_all: bool, tenant: str | None) -> None:
        """Re-feed pending dead letters to the stream (after fixing the cause)."""
        from streaming.aws import aws_client
        from streaming.events import EventDecoder
        from streaming.producer import Producer
        from streaming.speed import deadletters
        from orchestration.environment import resolve_endpoints

        settings = _settings()
        endpoints = resolve_endpoints(settings)
        kinesis = aws_client("kinesis", settings.aws_region, endpoints.aws_url("kinesis"))

        def send(records: list[tuple[bytes, str]]) -> None:
            with Producer(kinesis, settings.stream_name) as producer:
                producer.put_many(records)

        result = deadletters.replay(_redis(settings), send, EventDecoder(settings.max_event_bytes, settings.max_future_skew_s),
                                    reason, limit, only_valid=not replay_all, tenant=tenant)
        console.print(f"re-fed {result.sent:,} dead letters to {settings.stream_name} ({result.marked:,} marked replayed); "
                      f"{result.still_invalid:,} still invalid and left pending")

    # -- query -----------------------------------------------------------------------------------
    @main.group()
    def query() -> None:
        """Read real-time counters, uniques, top pages, segments, lag and latency."""

    @query.command("counts")
    @click.option("--tenant", required=True)
    @click.option("--event-type", default=None)
    @click.option("--resolution", type=click.Choice(["m", "h", "d"]), default=None, help="Also print a series.")
    @with_range
    @format_option(default="json")
    @user_errors
    @query_errors
    def q_counts(tenant: str, event_type: str | None, resolution: str | None, minutes: int, end: str | None,
                 fmt: str) -> None:
        """Events per type for one tenant over a range."""
        from streaming.query.api import SpeedQueries

        q = SpeedQueries(_redis(_settings()))
        start, stop = _range(minutes, end)
        result = q.counts(tenant, start, stop, event_type)
        series = q.series(tenant, start, stop, resolution) if resolution else None
        if fmt == "json":
            echo_json(result.as_dict())
            if series is not None:
                echo_json(series)
            return
        doc = result.as_dict()
        print_rows(fmt, "count", ("tenant", "event_type", "events"),
                   [*((tenant, t, n) for t, n in sorted(doc["by_event_type"].items())), (tenant, "total", doc["total"])],
                   title=f"events {doc['start']} .. {doc['end']}")
        if series:
            print_rows(fmt, "series", tuple(series[0]), (tuple(r.values()) for r in series))

    @query.command("uniques")
    @click.option("--tenant", required=True)
    @with_range
    @format_option(default="plain")
    @user_errors
    @query_errors
    def q_uniques(tenant: str, minutes: int, end: str | None, fmt: str) -> None:
        """Unique visitors (HyperLogLog) for one tenant over a range (hour resolution)."""
        from streaming.query.api import SpeedQueries

        start, stop = _range(minutes, end)
        n = SpeedQueries(_redis(_settings())).uniques(tenant, start, stop)
        if fmt == "json":
            echo_json({"tenant": tenant, "start": start.isoformat(), "end": stop.isoformat(), "uniques": n})
        else:
            console.print(str(n))

    @query.command("top-pages")
    @click.option("--tenant", required=True)
    @click.option("--limit", default=10, show_default=True)
    @with_range
    @format_option(default="plain")
    @user_errors
    @query_errors
    def q_top(tenant: str, limit: int, minutes: int, end: str | None, fmt: str) -> None:
        """Most viewed paths for one tenant over a range (hour resolution); paths shown literally."""
        from streaming.query.api import SpeedQueries

        start, stop = _range(minutes, end)
        pages = SpeedQueries(_redis(_settings())).top_pages(tenant, start, stop, limit)
        if fmt == "json":
            echo_json([{"path": path, "views": n} for path, n in pages])
        elif fmt == "table":
            print_rows(fmt, "page", ("views", "path"), ((n, path) for path, n in pages))
        else:
            for path, n in pages:
                console.print(f"{n:>8,}  {printable(path)}")

    @query.command("segment")
    @click.option("--tenant", required=True)
    @click.option("--name", "segment", required=True, help="Segment name from streaming/segments.yaml.")
    @click.option("--at", default=None, help="Membership at this time (ISO-8601); default now.")
    @click.option("--limit", default=100, show_default=True)
    @format_option(default="plain")
    @user_errors
    @query_errors
    def q_segment(tenant: str, segment: str, at: str | None, limit: int, fmt: str) -> None:
        """Live members of a behavioural segment (anonymous ids, one per line)."""
        from streaming.query.api import SpeedQueries

        when = dt.datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None
        members = SpeedQueries(_redis(_settings())).segment_members(tenant, segment, when, limit)
        if fmt == "json":
            echo_json({"tenant": tenant, "segment": segment, "members": members})
            return
        console.print(f"{len(members)} members")
        if fmt == "table":
            print_rows(fmt, "member", ("anonymous_id",), ((m,) for m in members))
        else:
            for member in members:
                console.print(printable(member))

    @query.command("lag")
    @format_option(default="json")
    @user_errors
    def q_lag(fmt: str) -> None:
        """MillisBehindLatest per consumer group and shard, as last reported."""
        from streaming.query.api import SpeedQueries

        lag = SpeedQueries(_redis(_settings())).consumer_lag()
        if fmt == "json":
            echo_json(lag)
        else:
            print_rows(fmt, "lag", ("consumer/shard", "millis_behind_latest", "at"),
                       ((k, v.get("millis_behind_latest"), v.get("at")) for k, v in sorted(lag.items())))

    @query.command("latency")
    @with_range
    @format_option(default="json")
    @user_errors
    @query_errors
    def q_latency(minutes: int, end: str | None, fmt: str) -> None:
        """Event-to-counter latency percentiles over a range."""
        from streaming.query.api import SpeedQueries

        start, stop = _range(minutes, end)
        latency = SpeedQueries(_redis(_settings())).latency(start, stop)
        if fmt == "json":
            echo_json(latency)
        else:
            print_rows(fmt, "latency", tuple(latency), [tuple(latency.values())])

    @query.command("live")
    @click.option("--top", default=10, show_default=True, help="Tenants to show.")
    @with_range
    @format_option()
    @user_errors
    @query_errors
    def q_live(top: int, minutes: int, end: str | None, fmt: str | None) -> None:
        """A table of the busiest tenants' counters, uniques and top page over a range (default last hour)."""
        from rich.table import Table

        from streaming.events import EVENT_TYPES
        from streaming.query.api import SpeedQueries
        from streaming.speed.live import busiest_tenants

        client = _redis(_settings())
        q = SpeedQueries(client)
        start, stop = _range(minutes, end)
        rows = []
        for tenant in busiest_tenants(client, start, stop, top):
            c = q.counts(tenant, start, stop)
            pages = q.top_pages(tenant, start, stop, 1)
            rows.append({"tenant": tenant, **{t: c.by_event_type.get(t, 0) for t in EVENT_TYPES}, "total": c.total,
                         "uniques": q.uniques(tenant, start, stop), "top_page": pages[0][0] if pages else None,
                         "top_page_views": pages[0][1] if pages else 0,
                         "pricing_intent": len(q.segment_members(tenant, "pricing_intent", limit=100_000))})
        latency = q.latency(start, stop)
        lag = q.consumer_lag()
        fmt = resolved(fmt)
        if fmt == "json":
            echo_json({"start": start.isoformat(), "end": stop.isoformat(), "tenants": rows, "latency": latency, "lag": lag})
            return
        if fmt == "plain":
            for row in rows:
                click.echo(plain_line("tenant", row))
        else:
            table = Table(title=f"live counters {start:%H:%M}-{stop:%H:%M} UTC")
            table.add_column("tenant", no_wrap=True, min_width=10)
            for column in (*EVENT_TYPES, "total", "uniques", "top page", "pricing_intent"):
                table.add_column(column)
            for row in rows:
                page = f"{cell(row['top_page'])} ({row['top_page_views']:,})" if row["top_page"] is not None else ""
                table.add_row(row["tenant"], *(cell(row[t]) for t in EVENT_TYPES), cell(row["total"]),
                              cell(row["uniques"]), page, str(row["pricing_intent"]))
            console.print(table)
        console.print(f"event-to-counter latency: p50 {latency['p50_s']} s, p99 {latency['p99_s']} s over "
                      f"{latency['events']:,} events; lag: " + ", ".join(
                          f"{k}={v['millis_behind_latest']} ms" for k, v in sorted(lag.items())))

    # -- serve / keys ----------------------------------------------------------------------------
    @main.command()
    @click.option("--port", default=8080, show_default=True)
    @click.option("--host", default="127.0.0.1", show_default=True, help="Loopback by default.")
    @user_errors
    def serve(port: int, host: str) -> None:
        """Serve the HTTP query API (OpenAPI at /openapi.json) and the live dashboard (/dashboard)."""
        import uvicorn

        from streaming.logs import configure
        from streaming.query.http import create_app

        settings = _settings()
        configure("query", settings)
        app = create_app(_redis(settings), _privacy(settings))
        console.print(f"tally query API on http://{host}:{port} (OpenAPI: /openapi.json, Prometheus: /metrics); live "
                      f"dashboard: http://{host}:{port}/dashboard#tenant=TENANT&key=KEY (`tally keys create --tenant TENANT`)")
        # log_config=None: uvicorn's records go through tally's handler (JSON, scrubbed) instead of its own.
        uvicorn.run(app, host=host, port=port, log_level="warning", log_config=None)

    @main.group()
    def keys() -> None:
        """Per-tenant keys: read keys for the HTTP query API, write keys for the collector."""

    @keys.command("create")
    @click.option("--tenant", required=True)
    @click.option("--kind", type=click.Choice(["read", "write"]), default="read", show_default=True,
                  help="read: the query API and dashboard (Redis); write: the collector (SDKs send with it).")
    @user_errors
    def keys_create(tenant: str, kind: str) -> None:
        """Create an API key for one tenant; it is printed once and stored only hashed."""
        from streaming.query.apikeys import create_key
        from streaming.speed.keys import BadTenant

        if kind == "write":
            from orchestration.commands.collector import create_write_key
            from streaming.collector.writekeys import BadTenantId

            try:
                click.echo(create_write_key(_settings(), tenant))
            except BadTenantId as exc:
                raise click.BadParameter(str(exc), param_hint="--tenant") from None
            return
        try:
            key = create_key(_redis(_settings()), tenant)
        except BadTenant as exc:
            raise click.BadParameter(printable(str(exc)), param_hint="--tenant") from None
        click.echo(key)
