"""`tally` subcommands of the speed layer: consume, dead-letters, query, serve, keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

UTC = dt.timezone.utc


def _redis(settings: Any) -> Any:
    from streaming.speed.connect import connect
    from streaming.stack.manager import resolve_endpoints

    return connect(resolve_endpoints(settings).redis_url)


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

        try:
            return fn(*args, **kwargs)
        except (QueryError, BadTenant, ValueError) as exc:
            raise click.UsageError(str(exc)) from None

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
    from orchestration.cli import _settings, console, user_errors

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
        """Run the speed-layer consumer: stream -> exactly-once counters in Redis."""
        from streaming.speed.run import ConsumerOptions, run_consumer

        settings = _settings()
        worker = run_consumer(settings, ConsumerOptions(group=group, worker_id=worker_id), until_caught_up, timeout_s)
        lag = worker.lag()
        console.print(f"consumer {worker.worker_id} stopped; MillisBehindLatest per shard: "
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
    @user_errors
    def dl_list(reason: str | None, limit: int, tenant: str | None) -> None:
        """Counts per reason, then the oldest pending dead letters."""
        from rich.table import Table

        from streaming.speed import deadletters

        client = _redis(_settings())
        totals, replayed = deadletters.counts(client, tenant), deadletters.replayed_counts(client, tenant)
        table = Table("reason", "dead letters", "replayed", title="dead letters")
        for r in sorted(totals):
            table.add_row(r, f"{totals[r]:,}", f"{replayed.get(r, 0):,}")
        console.print(table)
        console.print(f"{sum(totals.values()):,} dead letters, {sum(totals.values()) - sum(replayed.values()):,} pending")
        rows = Table("entry (shard/sequence)", "reason", "detail", "bytes", "raw (first 60)")
        for e in deadletters.list_pending(client, reason, limit, tenant):
            rows.add_row(e.entry_id, e.reason, e.detail[:80], str(len(e.raw)), repr(e.raw[:60]))
        console.print(rows)

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
        from streaming.stack.manager import resolve_endpoints

        settings = _settings()
        endpoints = resolve_endpoints(settings)
        kinesis = aws_client("kinesis", settings.aws_region, endpoints.aws_endpoint_url)

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
    @user_errors
    @query_errors
    def q_counts(tenant: str, event_type: str | None, resolution: str | None, minutes: int, end: str | None) -> None:
        """Events per type for one tenant over a range."""
        from streaming.query.api import SpeedQueries

        q = SpeedQueries(_redis(_settings()))
        start, stop = _range(minutes, end)
        result = q.counts(tenant, start, stop, event_type)
        console.print_json(data=result.as_dict())
        if resolution:
            console.print_json(data=q.series(tenant, start, stop, resolution))

    @query.command("uniques")
    @click.option("--tenant", required=True)
    @with_range
    @user_errors
    @query_errors
    def q_uniques(tenant: str, minutes: int, end: str | None) -> None:
        """Unique visitors (HyperLogLog) for one tenant over a range (hour resolution)."""
        from streaming.query.api import SpeedQueries

        start, stop = _range(minutes, end)
        console.print(SpeedQueries(_redis(_settings())).uniques(tenant, start, stop))

    @query.command("top-pages")
    @click.option("--tenant", required=True)
    @click.option("--limit", default=10, show_default=True)
    @with_range
    @user_errors
    @query_errors
    def q_top(tenant: str, limit: int, minutes: int, end: str | None) -> None:
        """Most viewed paths for one tenant over a range (hour resolution)."""
        from streaming.query.api import SpeedQueries

        start, stop = _range(minutes, end)
        for path, n in SpeedQueries(_redis(_settings())).top_pages(tenant, start, stop, limit):
            console.print(f"{n:>8,}  {path}")

    @query.command("segment")
    @click.option("--tenant", required=True)
    @click.option("--name", "segment", required=True, help="Segment name from streaming/segments.yaml.")
    @click.option("--at", default=None, help="Membership at this time (ISO-8601); default now.")
    @click.option("--limit", default=100, show_default=True)
    @user_errors
    @query_errors
    def q_segment(tenant: str, segment: str, at: str | None, limit: int) -> None:
        """Live members of a behavioural segment."""
        from streaming.query.api import SpeedQueries

        when = dt.datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None
        members = SpeedQueries(_redis(_settings())).segment_members(tenant, segment, when, limit)
        console.print(f"{len(members)} members" + (": " + ", ".join(members) if members else ""))

    @query.command("lag")
    @user_errors
    def q_lag() -> None:
        """MillisBehindLatest per consumer group and shard, as last reported."""
        from streaming.query.api import SpeedQueries

        console.print_json(data=SpeedQueries(_redis(_settings())).consumer_lag())

    @query.command("latency")
    @with_range
    @user_errors
    @query_errors
    def q_latency(minutes: int, end: str | None) -> None:
        """Event-to-counter latency percentiles over a range."""
        from streaming.query.api import SpeedQueries

        start, stop = _range(minutes, end)
        console.print_json(data=SpeedQueries(_redis(_settings())).latency(start, stop))

    @query.command("live")
    @click.option("--top", default=10, show_default=True, help="Tenants to show.")
    @with_range
    @user_errors
    @query_errors
    def q_live(top: int, minutes: int, end: str | None) -> None:
        """A table of the busiest tenants' counters, uniques and top page over a range (default last hour)."""
        from rich.table import Table

        from streaming.events import EVENT_TYPES
        from streaming.query.api import SpeedQueries
        from streaming.speed.live import busiest_tenants

        client = _redis(_settings())
        q = SpeedQueries(client)
        start, stop = _range(minutes, end)
        table = Table(title=f"live counters {start:%H:%M}-{stop:%H:%M} UTC")
        table.add_column("tenant", no_wrap=True, min_width=10)
        for column in (*EVENT_TYPES, "total", "uniques", "top page", "pricing_intent"):
            table.add_column(column)
        for tenant in busiest_tenants(client, start, stop, top):
            c = q.counts(tenant, start, stop)
            pages = q.top_pages(tenant, start, stop, 1)
            table.add_row(tenant, *(f"{c.by_event_type.get(t, 0):,}" for t in EVENT_TYPES), f"{c.total:,}",
                          f"{q.uniques(tenant, start, stop):,}", f"{pages[0][0]} ({pages[0][1]:,})" if pages else "",
                          str(len(q.segment_members(tenant, "pricing_intent", limit=100_000))))
        console.print(table)
        latency = q.latency(start, stop)
        console.print(f"event-to-counter latency: p50 {latency['p50_s']} s, p99 {latency['p99_s']} s over "
                      f"{latency['events']:,} events; lag: " + ", ".join(
                          f"{k}={v['millis_behind_latest']} ms" for k, v in sorted(q.consumer_lag().items())))

    # -- serve / keys ----------------------------------------------------------------------------
    @main.command()
    @click.option("--port", default=8080, show_default=True)
    @click.option("--host", default="127.0.0.1", show_default=True, help="Loopback by default.")
    @user_errors
    def serve(port: int, host: str) -> None:
        """Serve the HTTP query API (OpenAPI at /openapi.json) and the live dashboard (/dashboard)."""
        import uvicorn

        from streaming.query.http import create_app

        app = create_app(_redis(_settings()))
        console.print(f"tally query API on http://{host}:{port} (OpenAPI: /openapi.json); live dashboard: "
                      f"http://{host}:{port}/dashboard#tenant=TENANT&key=KEY (`tally keys create --tenant TENANT`)")
        uvicorn.run(app, host=host, port=port, log_level="warning")

    @main.group()
    def keys() -> None:
        """Per-tenant API keys for the HTTP query API."""

    @keys.command("create")
    @click.option("--tenant", required=True)
    @user_errors
    def keys_create(tenant: str) -> None:
        """Create an API key for one tenant; it is printed once and stored only hashed."""
        from streaming.query.apikeys import create_key
        from streaming.speed.keys import BadTenant

        try:
            key = create_key(_redis(_settings()), tenant)
        except BadTenant as exc:
            raise click.BadParameter(str(exc), param_hint="--tenant") from None
        click.echo(key)
