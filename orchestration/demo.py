"""`make demo`: the main job end to end on the embedded default, in under five minutes.

1. a clean embedded stack (AWS emulator, Redis, DuckDB file), saying what started where;
2. a day in miniature through the producer into Kinesis, with the speed consumer and the archiver running
   as their own processes: three hours of history (sent as fast as the stream takes it), then a minute of
   live traffic at the wall clock with a 10x spike; progress bars and live counters while it runs;
3. the batch layer for the hours covered, through the same Dagster definitions the UI shows (runs kept
   in ``DAGSTER_HOME``), then the dbt marts and docs;
4. reconciliation of the three layers and a summary against the generator's ledger;
5. the next commands. Everything the demo started is stopped at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streaming.settings import SettingError, Settings, load_settings

UTC = dt.timezone.utc
console = Console()
HISTORY_S = 3 * 3600
HISTORY_RATE = 8.0
LIVE_S = 60
LIVE_FACTOR = 12.0  # 96 events/s during the live minute...
SPIKE = (20, 10, 10.0)  # ...and 10x that for 10 s, 20 s into it


@dataclass
class Phase:
    n: int
    title: str


def step(phase: Phase, total: int = 5) -> None:
    console.rule(f"[bold]{phase.n}/{total} {phase.title}[/]")


@contextmanager
def background(name: str, argv: list[str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process for the run's duration; SIGTERM (a clean flush) when the block ends."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"demo-{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def quiet(log_path: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr (Dagster's and dbt's logs included) to ``log_path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def clean_stack(settings: Settings) -> dict[str, Any]:
    """Stop what tally started, drop the local demo state, start afresh."""
    from streaming.stack import manager

    manager.down(settings)
    for path in (settings.home / "redis", settings.duckdb_path, settings.home / "runs" / "demo"):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    state = manager.up(settings)
    for component in state.values():
        how = "started" if component.started_by_tally else "using"
        console.print(f"  {how} [bold]{component.name}[/] at {component.url} ({component.origin} {component.version})")
    console.print(f"  warehouse: DuckDB file {settings.duckdb_path}")
    console.print(f"  stream [bold]{settings.stream_name}[/] ({settings.stream_shards} shards), bucket "
                  f"[bold]{settings.bucket}[/], lease table [bold]{settings.lease_table}[/]")
    return state


def generate(settings: Settings, now: float) -> tuple[Any, Any]:
    from streaming.generator import GeneratorConfig, Spike, TrafficGenerator

    start = dt.datetime.fromtimestamp(int(now) - HISTORY_S, tz=UTC)
    config = GeneratorConfig(
        seed=int(now), tenants=50, start=start.isoformat().replace("+00:00", "Z"), duration_s=HISTORY_S + LIVE_S,
        rate_per_s=HISTORY_RATE,
        spikes=(Spike(HISTORY_S, LIVE_S, LIVE_FACTOR), Spike(HISTORY_S + SPIKE[0], SPIKE[1], SPIKE[2])),
        duplicate_rate=0.02, late_rate=0.01, late_delay_s=(30, 900), malformed_rate=0.005,
        max_event_bytes=settings.max_event_bytes,
    )
    generator = TrafficGenerator(config)
    records = list(generator.records())
    return config, (generator.ledger, records)


def live_view(queries: Any, progress: Progress, tenant: str, since: dt.datetime) -> Group:
    from streaming.events import EVENT_TYPES

    now = dt.datetime.now(UTC)
    table = Table("last 5 minutes", *EVENT_TYPES, "uniques", title=f"live counters for {tenant} (Redis)")
    start = max(since, now - dt.timedelta(minutes=5))
    try:
        counts = queries.counts(tenant, start, now + dt.timedelta(minutes=1))
        by_type = counts.as_dict().get("by_event_type", {})
        uniques = queries.uniques(tenant, start, now + dt.timedelta(minutes=1))
        table.add_row(tenant, *(f"{by_type.get(t, 0):,}" for t in EVENT_TYPES), f"{uniques:,}")
        lag = queries.consumer_lag()
        worst = max((v.get("millis_behind_latest", 0) for k, v in lag.items() if k.startswith("speed/")), default=0)
        lag_line = f"consumer lag (max MillisBehindLatest over shards): {worst:,} ms"
    except Exception as exc:  # noqa: BLE001 - a display refresh must not stop the demo
        lag_line = f"(counters not readable yet: {type(exc).__name__})"
    return Group(progress, table, lag_line)


def stream_traffic(settings: Settings, endpoints: Any, ledger: Any, records: list[Any], now0: float) -> tuple[float, float]:
    """Send history fast, then live records at the wall clock; returns (live_start, live_end) epoch."""
    from streaming.aws import aws_client
    from streaming.producer import Producer
    from streaming.query.api import SpeedQueries
    from streaming.speed.connect import connect

    kinesis = aws_client("kinesis", settings.aws_region, endpoints.aws_url("kinesis"))
    queries = SpeedQueries(connect(endpoints.redis_url))
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    sent = progress.add_task("events sent", total=len(records))
    start_ms = int(now0 - HISTORY_S) * 1000
    live_start = now0
    history_done = False
    producer = Producer(kinesis, settings.stream_name, on_sent=lambda n: progress.advance(sent, n))
    since = dt.datetime.fromtimestamp(now0 - 300, tz=UTC)
    last_refresh = 0.0
    with Live(live_view(queries, progress, "tenant-001", since), console=console, refresh_per_second=2) as live:
        for record in records:
            # Late records due after the live minute are sent at its end rather than waited for.
            due = min((start_ms + record.emit_ms) / 1000.0, now0 + LIVE_S)
            if due > time.time():
                producer.flush()
                if not history_done:
                    history_done = True
                    live_start = time.time()
                while due > time.time():
                    time.sleep(min(0.2, due - time.time()))
                    if time.time() - last_refresh > 0.5:
                        live.update(live_view(queries, progress, "tenant-001", since))
                        last_refresh = time.time()
            producer.put(record.data, record.partition_key)
            if time.time() - last_refresh > 0.5:
                live.update(live_view(queries, progress, "tenant-001", since))
                last_refresh = time.time()
        producer.flush()
        live.update(live_view(queries, progress, "tenant-001", since))
    return live_start, time.time()


def wait_caught_up(endpoints: Any, after: float, timeout_s: float = 60.0) -> None:
    """Until every speed shard reported MillisBehindLatest 0 at a poll after ``after``."""
    from streaming.query.api import SpeedQueries
    from streaming.speed.connect import connect

    queries = SpeedQueries(connect(endpoints.redis_url))
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        lag = {k: v for k, v in queries.consumer_lag().items() if k.startswith("speed/")}
        if lag and all(v.get("millis_behind_latest", 1) == 0 and v.get("at", 0) > after + 1 for v in lag.values()):
            return
        time.sleep(0.5)
    console.print("[yellow]the speed consumer did not report caught-up in time; counters may still be moving[/]")


def main() -> None:
    try:
        settings = load_settings()
    except SettingError as exc:
        console.print(f"[bold red]tally:[/] {exc}", highlight=False)
        sys.exit(2)
    t0 = time.time()
    try:
        run(settings, t0)
    except SettingError as exc:
        console.print(f"[bold red]tally:[/] {exc}", highlight=False)
        sys.exit(2)
    finally:
        from streaming.stack import manager

        stopped = manager.down(settings)
        if stopped:
            console.print(f"stopped what the demo started: {', '.join(stopped)} "
                          "(data stays under .tally/: Redis AOF, DuckDB file, Dagster runs)")


def run(settings: Settings, t0: float) -> None:
    from streaming.stack.manager import resolve_endpoints

    step(Phase(1, "a clean embedded stack"))
    clean_stack(settings)
    endpoints = resolve_endpoints(settings)
    env = {**os.environ, "TALLY_AWS_ENDPOINT_URL": endpoints.aws_endpoint_url or "", "TALLY_REDIS_URL": endpoints.redis_url}
    logs = settings.home / "logs"

    step(Phase(2, "a day in miniature: 3 hours of history, then a live minute with a 10x spike"))
    now0 = time.time()
    config, (ledger, records) = generate(settings, now0)
    console.print(f"  generated {len(records):,} records (seed {config.seed}): {ledger.valid_events:,} valid events from "
                  f"{config.tenants} tenants, {ledger.duplicates:,} duplicates, {ledger.late_events:,} late, "
                  f"{sum(ledger.dead_letters.values()):,} malformed")
    py = sys.executable
    with background("consumer", [py, "-m", "streaming.speed.run"], logs) as consumer, \
            background("archiver", [py, "-m", "orchestration.cli", "archive", "--follow"], logs):
        _ = consumer
        live_start, live_end = stream_traffic(settings, endpoints, ledger, records, now0)
        wait_caught_up(endpoints, live_end)
    console.print("  speed consumer and archiver stopped cleanly (the archiver committed its last batches)")

    step(Phase(3, "the batch layer through Dagster: raw_events per hour, then dbt build"))
    os.environ.update({k: v for k, v in env.items() if k.startswith("TALLY_")})
    first_hour = dt.datetime.fromtimestamp(now0 - HISTORY_S, tz=UTC).replace(minute=0, second=0, microsecond=0)
    os.environ["TALLY_DUCKDB_PATH"] = str(settings.duckdb_path.resolve())
    batch_log = logs / "demo-batch.log"
    started = time.time()
    with console.status("Dagster: raw_events backfill over the hours, then dbt build (log: " + str(batch_log) + ")"):
        with quiet(batch_log):
            from orchestration.batch import build_marts  # Dagster's import-time warnings go to the log too

            report = build_marts(first_hour, None)
            docs = subprocess.run([str(Path(py).parent / "dbt"), "docs", "generate", "--project-dir", "dbt_project",
                                   "--profiles-dir", "dbt_project", "--quiet"], env={**os.environ})
    console.print(f"  {report.hours} hourly partitions of raw_events loaded and the dbt marts built in "
                  f"{time.time() - started:.0f} s: Dagster runs {', '.join(r[:8] for r in report.runs)} "
                  f"({'succeeded' if report.success else 'FAILED: see ' + str(batch_log)}), recorded in {os.environ.get('DAGSTER_HOME', 'an ephemeral instance')}")
    console.print("  dbt docs generated (make docs serves them)" if docs.returncode == 0
                  else f"[yellow]  dbt docs generate failed: see {batch_log}[/]")
    if not report.success:
        raise SystemExit(1)

    step(Phase(4, "reconciliation: archive × warehouse × Redis"))
    summary(settings, endpoints, ledger, now0, live_start, live_end)

    step(Phase(5, "next"))
    console.print("  [bold]make ui[/]    Dagster UI on http://127.0.0.1:3000 (lineage, the runs above, checks)")
    console.print("  [bold]make docs[/]  dbt docs on http://127.0.0.1:8580")
    console.print("  [bold]tally stack up[/], then [bold]tally query counts --tenant tenant-001 --minutes 240[/] or "
                  "[bold]tally serve[/] for the HTTP API and live dashboard (keys: [bold]tally keys create --tenant T[/])")
    console.print(f"demo finished in {time.time() - t0:.0f} s")


def summary(settings: Settings, endpoints: Any, ledger: Any, now0: float, live_start: float, live_end: float) -> None:
    from streaming.query.api import SpeedQueries
    from streaming.reconcile.service import Layers, run_reconcile
    from streaming.speed import deadletters
    from streaming.speed.connect import connect

    client = connect(endpoints.redis_url)
    queries = SpeedQueries(client)
    start = dt.datetime.fromtimestamp(now0 - HISTORY_S, tz=UTC).replace(second=0, microsecond=0)
    end = dt.datetime.fromtimestamp(live_end + 120, tz=UTC).replace(second=0, microsecond=0)
    layers = Layers.from_settings(settings)
    run = run_reconcile(settings, layers, start, end, who="make demo")
    counted = int(run.inputs.speed["n"].sum())
    archived = int(run.inputs.archive["n"].sum())
    warehouse = int(run.inputs.warehouse["mart"].sum())
    dead = deadletters.counts(client)
    # Latency histograms are kept per received minute: the live minute's events, not the backfilled history.
    latency = queries.latency(dt.datetime.fromtimestamp(int(live_start) // 60 * 60, tz=UTC),
                              dt.datetime.fromtimestamp(live_end + 60, tz=UTC))
    table = Table("", "generator ledger", "tally", title="summary")
    table.add_row("records sent", f"{ledger.records_total:,}", "")
    table.add_row("valid events (deduplicated)", f"{ledger.valid_events:,}", "")
    table.add_row("counted in real time (Redis)", f"{ledger.valid_events:,}", f"{counted:,}")
    table.add_row("archived (with duplicates)", f"{ledger.valid_events + ledger.duplicates:,}", f"{archived:,}")
    table.add_row("in the warehouse (fct_events)", f"{ledger.valid_events:,}", f"{warehouse:,}")
    table.add_row("duplicates removed", f"{ledger.duplicates:,}", "")
    for reason in sorted(set(ledger.dead_letters) | set(dead)):
        table.add_row(f"dead letter {reason}", f"{ledger.dead_letters.get(reason, 0):,}", f"{dead.get(reason, 0):,}")
    table.add_row("event-to-counter p50 / p99", "",
                  f"{latency['p50_s']} s / {latency['p99_s']} s" if latency["events"] else "n/a")
    console.print(table)
    from streaming.reconcile.model import Verdict

    names = {v.value for v in Verdict}
    verdicts = Table("verdict", "cells", title="reconciliation verdicts (tenant × event type × minute)")
    for verdict, n in sorted(run.result.summary.items()):
        if verdict in names and (n or verdict in ("ok", "pending")):
            verdicts.add_row(verdict, f"{n:,}")
    console.print(verdicts)
    console.print(f"  {run.result.summary.get('cells', 0):,} cells judged; 'pending' = windows not closed yet "
                  f"(the live minute ended less than TALLY_ALLOWED_LATENESS_S={settings.allowed_lateness_s} s ago); "
                  f"{run.result.summary.get('late_events', 0):,} events arrived after their window closed and are "
                  "reported as late, not as loss")
    loss = "[red]unexplained loss found[/]" if run.result.unexplained_loss else "[green]no unexplained loss[/]"
    console.print(f"  {loss}; report: [bold]{run.report_path}[/]")


if __name__ == "__main__":
    main()
