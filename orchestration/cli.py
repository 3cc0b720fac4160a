"""The `tally` command. Each subcommand reads settings when it runs and imports its heavy parts lazily.

Errors a user can fix (a wrong setting, a stack that is not up) print one sentence naming the setting
and the fix, and exit 2; they never print a traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestration.environment import locate_endpoints
from orchestration.output import console, err_console, format_option, print_rows, resolved
from streaming.outages import exit_on_user_error
from streaming.settings import Settings, load_settings

__all__ = ["console", "err_console", "main", "user_errors"]
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn errors a user can fix (a wrong setting, a stack that is not up, a service that does not
    answer) into one sentence on stderr and exit 2. Every command run through ``tally`` gets this from
    :class:`TallyGroup` already; the decorator keeps it when a command is invoked on its own."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return exit_on_user_error(lambda: fn(*args, **kwargs), locate=locate_endpoints)

    return wrapper  # type: ignore[return-value]


class TallyGroup(click.Group):
    """The ``tally`` group. A sub-command runs inside this group's ``invoke``, so every command and
    group added to it, now or later, has its errors translated here (:func:`streaming.outages.explain`):
    one sentence naming the service, the setting and the fix, exit 2, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        return exit_on_user_error(lambda: super(TallyGroup, self).invoke(ctx), locate=locate_endpoints)


def _settings() -> Settings:
    return load_settings()


@click.group(cls=TallyGroup)
def main() -> None:
    """tally: product event analytics with a real-time layer, a batch layer, and proof they agree."""


# -- stack ------------------------------------------------------------------------------------------
@main.group()
def stack() -> None:
    """The embedded local stack: AWS emulator (Kinesis, S3, DynamoDB) and Redis on loopback."""


@stack.command("up")
@user_errors
def stack_up() -> None:
    """Start what is not running; create the stream, bucket and lease table. A failed `up` changes nothing."""
    from streaming.stack import manager

    settings = _settings()
    state = manager.up(settings)
    for component in state.values():
        how = "started" if component.started_by_tally else "using"
        console.print(f"{how} {component.name} at {_redacted(component.url)} ({component.origin} {component.version})")
    console.print(f"stream {settings.stream_name} ({settings.stream_shards} shards), bucket "
                  f"{settings.bucket}, lease table {settings.lease_table} ready; state in {settings.home}/")


@stack.command("down")
@user_errors
def stack_down() -> None:
    """Stop what `tally stack up` started (never an external TALLY_REDIS_URL)."""
    from streaming.stack import manager

    stopped = manager.down(_settings())
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack.command("status")
@format_option()
@user_errors
def stack_status(fmt: str | None) -> None:
    """Say what runs, where, which version, Redis memory, and what commands use (variables first)."""
    from streaming.stack import manager

    rows = manager.status(_settings())
    columns = ("component", "running", "where", "origin", "version", "used by", "details")
    print_rows(resolved(fmt), "component", columns, (
        (row["component"], "yes" if row["running"] else "no", row["url"], row["origin"], row["version"],
         row.get("used_by", ""),
         ", ".join(f"{k}={row[k]}" for k in ("memory", "keys", "spool_bytes", "drained", "source_id", "forward_bytes", "forward_lag_s",
                                                  "forwarded", "forward_failures", "forward_rejected", "pid", "error") if row.get(k) is not None))
        for row in rows), json_doc=rows)


def _redacted(url: str) -> str:
    from streaming.settings import redact_url

    return redact_url(url)


# -- generate ---------------------------------------------------------------------------------------
@main.command()
@click.option("--seed", default=42, show_default=True, help="Random seed; the same seed gives the same records.")
@click.option("--tenants", default=50, show_default=True, help="Number of tenants (Zipf-distributed traffic).")
@click.option("--duration-s", default=300, show_default=True, help="Seconds of simulated traffic.")
@click.option("--rate", "rate_per_s", default=100.0, show_default=True, help="Base events per second.")
@click.option("--spike", "spikes", multiple=True, help="AT:LENGTH:FACTOR, e.g. 120:10:10 (10x for 10 s at 120 s).")
@click.option("--start", default="now", show_default=True, help="received_at of the first event: ISO-8601 or 'now'.")
@click.option("--duplicates", "duplicate_rate", default=0.0, help="Fraction of events re-sent as exact copies.")
@click.option("--late", "late_rate", default=0.0, help="Fraction of events that reach the stream 30 s-10 min late.")
@click.option("--malformed", "malformed_rate", default=0.0, help="Fraction of records that are malformed (every reason).")
@click.option("--upstream-loss", "upstream_loss_rate", default=0.0, help="Fraction of events lost before the stream.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write records.jsonl.gz and ledger.json here (default: $TALLY_HOME/runs/<seed>).")
@click.option("--to-stream/--no-stream", default=False, help="Also send the records to the Kinesis stream.")
@click.option("--legacy", "legacy_dsn", default=None, metavar="DSN",
              help="Also write what a lossy legacy pipeline would have counted into this PostgreSQL database "
                   "(README: migrating from an existing pipeline).")
@click.option("--legacy-drop", default=0.05, show_default=True, help="--legacy: fraction of peak-minute events it loses.")
@click.option("--legacy-double", default=0.003, show_default=True, help="--legacy: fraction of events it counts twice.")
@user_errors
def generate(out_dir: Path | None, to_stream: bool, spikes: tuple[str, ...], start: str, legacy_dsn: str | None,
             legacy_drop: float, legacy_double: float, **knobs: Any) -> None:
    """Generate seeded traffic and its ground-truth ledger; optionally send it to Kinesis."""
    from streaming.generator import GeneratorConfig, Spike, read_run, write_run

    settings = _settings()
    if start == "now":
        now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=knobs["duration_s"])
        start = now.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    config = GeneratorConfig(start=start, spikes=tuple(Spike.parse(s) for s in spikes),
                             max_event_bytes=settings.max_event_bytes, **knobs)
    out_dir = out_dir or settings.home / "runs" / f"seed-{config.seed}"
    ledger = write_run(config, out_dir)
    console.print(f"wrote {ledger.records_total:,} records ({ledger.valid_events:,} valid events, "
                  f"{ledger.duplicates:,} duplicates, {ledger.late_events:,} late, "
                  f"{sum(ledger.dead_letters.values()):,} malformed) to {out_dir}/records.jsonl.gz; "
                  f"ledger in {out_dir}/ledger.json")
    if legacy_dsn:
        from streaming.migration.standin import StandInConfig, run_standin

        legacy = run_standin(list(read_run(out_dir)), legacy_dsn, out_dir,
                             StandInConfig(seed=config.seed, drop_rate=legacy_drop, double_rate=legacy_double))
        console.print(f"legacy stand-in: counted {legacy.counted:,} rows, lost {len(legacy.lost):,} events at peak "
                      f"minutes, counted {len(legacy.double_counted):,} twice; its ledger in "
                      f"{out_dir}/legacy_ledger.json, TALLY_MIGRATION_CONFIG={out_dir}/migration.yaml")
    if to_stream:
        _send(settings, (r for r in read_run(out_dir)), ledger.records_total)


def _send(settings: Settings, records: Any, total: int) -> None:
    from rich.progress import Progress

    from streaming.producer import Producer
    from orchestration.environment import resolve_endpoints

    kinesis = resolve_endpoints(settings).client("kinesis", settings.aws_region)
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("events sent", total=total)
        producer = Producer(kinesis, settings.stream_name, on_sent=lambda n: progress.advance(task, n))
        with producer:
            for record in records:
                producer.put(record.data, record.partition_key)
    stats = producer.stats
    console.print(f"sent {stats.records_sent:,} records in {stats.calls:,} PutRecords calls "
                  f"({stats.records_retried:,} resent after partial failures) to stream {settings.stream_name}")


# -- stream -----------------------------------------------------------------------------------------
@main.group()
def stream() -> None:
    """Look at the Kinesis stream."""


@stream.command("summary")
@click.option("--top", default=15, show_default=True, help="Tenants to list (the rest are summed).")
@format_option()
@user_errors
def stream_summary(top: int, fmt: str | None) -> None:
    """Read the whole stream once and count records by tenant and event type."""
    from streaming.events import EVENT_TYPES, EventDecoder
    from orchestration.environment import resolve_endpoints
    from streaming.stream_reader import summarize

    settings = _settings()
    kinesis = resolve_endpoints(settings).client("kinesis", settings.aws_region)
    summary = summarize(kinesis, settings.stream_name,
                        EventDecoder(settings.max_event_bytes, settings.max_future_skew_s))
    tenants: dict[str, dict[str, int]] = {}
    for (tenant, etype), n in summary.by_tenant_type.items():
        tenants.setdefault(tenant, {})[etype] = n
    ranked = sorted(tenants.items(), key=lambda kv: -sum(kv[1].values()))
    valid = sum(summary.by_tenant_type.values())
    fmt = resolved(fmt)
    if fmt == "json":
        from orchestration.output import echo_json

        echo_json({"stream": settings.stream_name, "records": summary.records, "valid_records": valid,
                   "distinct_event_ids": summary.distinct_event_ids, "by_tenant": dict(ranked),
                   "by_shard": dict(sorted(summary.by_shard.items())), "would_be_dead_lettered": summary.rejected})
        return
    rows: list[list[Any]] = []
    rest: dict[str, int] = {}
    for i, (tenant, by_type) in enumerate(ranked):
        if i < top:
            rows.append([tenant, *(by_type.get(t, 0) for t in EVENT_TYPES), sum(by_type.values())])
        else:
            for t, n in by_type.items():
                rest[t] = rest.get(t, 0) + n
    if rest:
        rows.append([f"{len(ranked) - top} more tenants", *(rest.get(t, 0) for t in EVENT_TYPES), sum(rest.values())])
    print_rows(fmt, "tenant", ("tenant", *EVENT_TYPES, "total"), rows,
               title=f"stream {settings.stream_name}: {summary.records:,} records")
    console.print(f"valid records {valid:,} ({summary.distinct_event_ids:,} distinct event_ids, "
                  f"{valid - summary.distinct_event_ids:,} repeats); shards: "
                  + ", ".join(f"{s}={n:,}" for s, n in sorted(summary.by_shard.items())))
    if summary.rejected:
        console.print("would be dead-lettered: " + ", ".join(f"{r}={n:,}" for r, n in sorted(summary.rejected.items())))


# -- settings ---------------------------------------------------------------------------------------
@main.command("settings")
@user_errors
def show_settings() -> None:
    """Print every setting (variable, default, meaning) and check the current values."""
    from streaming.settings import settings_table

    click.echo(settings_table())
    _settings()


def _register_domains() -> None:
    from orchestration.commands import (
        alerts, batch, collector, migrate, package, plan, privacy, reconcile, send, speed,
    )

    speed.register(main)
    send.register(main)
    batch.register(main)
    reconcile.register(main)
    privacy.register(main)
    plan.register(main)
    package.register(main)
    alerts.register(main)
    collector.register(main)
    migrate.register(main)


_register_domains()

if __name__ == "__main__":
    main()
