"""`make demo`: the main job end to end on the embedded default, in under five minutes.

1. a clean embedded stack (AWS emulator, Redis, DuckDB file), saying what started where;
2. a day in miniature through the front door: the generator's traffic as Segment batch requests to the
   collector ``tally stack up`` started (one write key per tenant), with the speed consumer and the
   archiver running as their own processes: three hours of traffic (sent as fast as the collector
   acknowledges it; its clock gives ``received_at``, so it lands in the minutes it is sent), then a minute
   of live traffic at the wall clock with a 10x spike; progress bars and live counters while it runs; then it
   waits until both have reached the tip of every shard (their recorded positions), stops them, and checks
   the stream holds nothing after their positions before it says they stopped cleanly;
3. the batch layer for the hours covered, through the same Dagster definitions the UI shows (runs kept
   in ``DAGSTER_HOME``), then the dbt marts and docs;
4. reconciliation of the three layers and a summary against the ledger of what the collector acknowledged
   (per tenant × event type × minute, from its answers: see ``orchestration/demo_front_door.py``);
5. the next commands. Everything the demo started is stopped at the end.

``TALLY_DEMO_SCALE`` (0.01-1) shrinks it: the test of the demo's happy path runs it at 0.05. The summary
is also written as JSON next to the report (``$TALLY_HOME/runs/demo/summary.json``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration.demo_front_door import EVENT_MAP, create_keys
from orchestration.environment import resolve_endpoints
from streaming.settings import SettingError, Settings, load_settings

UTC = dt.timezone.utc
console = Console()
HISTORY_RATE = 8.0
LIVE_FACTOR = 12.0  # 96 events/s during the live minute, and 10x that in the spike
#: The archiver's flush interval in the demo: short, so it reaches the tip soon after the last record.
DEMO_ARCHIVE_FLUSH_S = 5


@dataclass(frozen=True)
class Size:
    """The demo's run at ``TALLY_DEMO_SCALE``: 1 = three hours of history for 50 tenants and a live minute."""

    history_s: int
    tenants: int
    live_s: int

    @classmethod
    def at(cls, scale: float) -> Size:
        return cls(history_s=max(600, int(3 * 3600 * scale) // 60 * 60), tenants=max(5, round(50 * scale)),
                   live_s=max(20, int(60 * scale)))

    @property
    def spike(self) -> tuple[int, int, float]:
        """(seconds into the live part, length, factor): 10x for a sixth of it, a third of the way in."""
        return self.live_s // 3, max(2, self.live_s // 6), 10.0


@dataclass
class Phase:
    n: int
    title: str


def step(phase: Phase, total: int = 5) -> None:
    console.rule(f"[bold]{phase.n}/{total} {phase.title}[/]")


@contextmanager
def background(name: str, argv: list[str], log_dir: Path,
               env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process for the run's duration; SIGTERM (a clean flush) when the block ends."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"demo-{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
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
    event_map = settings.home / "demo-event-map.yaml"
    settings.home.mkdir(parents=True, exist_ok=True)
    event_map.write_text(EVENT_MAP)
    os.environ["TALLY_COLLECTOR_EVENT_MAP"] = str(event_map)  # the collector `up` starts reads it
    for path in (settings.home / "redis", settings.duckdb_path, settings.home / "runs" / "demo",
                 settings.collector.state_dir):
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


def generate(settings: Settings, now: float, size: Size) -> tuple[Any, Any]:
    from streaming.generator import GeneratorConfig, Spike, TrafficGenerator

    start = dt.datetime.fromtimestamp(int(now) - size.history_s, tz=UTC)
    at, length, factor = size.spike
    config = GeneratorConfig(
        seed=int(now), tenants=size.tenants, start=start.isoformat().replace("+00:00", "Z"),
        duration_s=size.history_s + size.live_s, rate_per_s=HISTORY_RATE,
        spikes=(Spike(size.history_s, size.live_s, LIVE_FACTOR), Spike(size.history_s + at, length, factor)),
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


def stream_traffic(settings: Settings, endpoints: Any, collector_url: str, keys: dict[str, str],
                   records: list[Any], now0: float, size: Size) -> tuple[float, float, Any]:
    """Send the history as fast as the collector acknowledges it, then the live part at the wall clock,
    as Segment batch requests; returns (live_start, live_end, what the collector acknowledged)."""
    from orchestration.demo_front_door import FrontDoor
    from streaming.query.api import SpeedQueries
    from streaming.speed.connect import connect

    queries = SpeedQueries(connect(endpoints.redis_url))
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    sent = progress.add_task("messages acknowledged by the collector", total=len(records))
    door = FrontDoor(collector_url, keys, on_sent=lambda n: progress.advance(sent, n))
    first_ms = records[0].emit_ms if records else 0
    live_at_ms = first_ms + size.history_s * 1000
    history_done = False
    live_start = time.time()
    since = dt.datetime.fromtimestamp(now0 - 60, tz=UTC)
    last_refresh = last_flush = 0.0
    with Live(live_view(queries, progress, "tenant-001", since), console=console, refresh_per_second=2) as live:
        for record in records:
            if record.emit_ms >= live_at_ms:
                if not history_done:
                    door.flush()
                    history_done = True
                    live_start = time.time()
                # Live: at the wall clock (late records due after the live part are sent at its end).
                due = live_start + min(record.emit_ms - live_at_ms, size.live_s * 1000) / 1000.0
                while due > time.time():
                    time.sleep(min(0.05, due - time.time()))
                    if time.time() - last_flush > 0.2:  # what an SDK's flush interval does
                        door.flush()
                        last_flush = time.time()
            door.add(record)
            if time.time() - last_refresh > 0.5:
                live.update(live_view(queries, progress, "tenant-001", since))
                last_refresh = time.time()
        door.flush()
        live.update(live_view(queries, progress, "tenant-001", since))
    return live_start, time.time(), door.acks


def wait_for_spool(collector_url: str, timeout_s: float = 180.0) -> float:
    """Until the collector's spool is empty (everything acknowledged is in Kinesis); seconds waited."""
    import requests

    started = time.time()
    with console.status("waiting for the collector's drainer to hand Kinesis what it acknowledged"):
        while time.time() - started < timeout_s:
            if requests.get(f"{collector_url}/health", timeout=10).json()["depth_bytes"] == 0:
                break
            time.sleep(0.2)
    return time.time() - started


def wait_for_tip(settings: Settings, after: float, timeout_s: float = 180.0) -> bool:
    """Until both consumers' positions say they reached the tip of every shard, seen by a poll that
    started after ``after`` (the last record sent). True if they did within ``timeout_s``."""
    from streaming.reconcile.service import Layers, consumers_behind

    layers = Layers.from_settings(settings, resolve_endpoints(settings))
    deadline = time.time() + timeout_s
    with console.status("waiting for the speed consumer and the archiver to reach the tip of every shard") as status:
        while time.time() < deadline:
            behind = consumers_behind(layers, after)
            if not behind:
                return True
            status.update(f"waiting for the tip of every shard: {', '.join(behind[:4])}"
                          f"{' ...' if len(behind) > 4 else ''} not there yet")
            time.sleep(0.5)
    return False


def check_stopped(settings: Settings) -> bool:
    """After both consumers stopped: every shard read by both to its end (nothing in the stream after
    their positions). Prints the positions checked."""
    from streaming.kinesis.leases import LeaseTable
    from streaming.reconcile.service import Layers, read_positions
    from streaming.reconcile.sources.archive import ArchiveReader

    layers = Layers.from_settings(settings, resolve_endpoints(settings))
    snapshot = ArchiveReader(layers.s3, layers.bucket).snapshot(0, 0)
    speed = LeaseTable(layers.dynamodb, settings.lease_table, layers.speed_group, settings.stream_name).leases()
    view = read_positions(layers, snapshot, speed)
    table = Table("shard", "speed layer position", "archive position", "records after them", title="positions checked")
    for row in view.shards.itertuples():
        table.add_row(str(row.shard_id), str(row.speed_seq), str(row.archive_seq), str(row.unread_records))
    console.print(table)
    return bool(len(view.shards)) and all(view.shards["read_complete"]) and int(view.shards["unread_records"].sum()) == 0


#: Everything the collector receives lands in the minutes the demo runs: windows close this long after
#: their minute (the default, 300 s, would leave the whole run pending when the demo reconciles).
DEMO_ALLOWED_LATENESS_S = "30"


def demo_settings() -> Settings:
    """The settings with the demo's lateness default; a wrong one is one sentence and exit 2."""
    os.environ.setdefault("TALLY_ALLOWED_LATENESS_S", DEMO_ALLOWED_LATENESS_S)
    try:
        return load_settings()
    except SettingError as exc:
        console.print(f"[bold red]tally:[/] {exc}", highlight=False)
        sys.exit(2)


def main() -> None:
    settings = demo_settings()
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


def run(settings: Settings, t0: float, extra: Callable[[Settings, dict[str, Any]], None] | None = None,
        extra_title: str = "") -> None:
    """The demo's phases; ``extra`` (``make demo-migration``'s parallel run) is one more phase before "next",
    given the settings and the stack's state."""

    total = 6 if extra is not None else 5
    size = Size.at(settings.demo_scale)
    step(Phase(1, "a clean embedded stack"), total)
    state = clean_stack(settings)
    endpoints = resolve_endpoints(settings)
    env = {**os.environ, "TALLY_AWS_ENDPOINT_URL": endpoints.aws_endpoint_url or "", "TALLY_REDIS_URL": endpoints.redis_url}
    logs = settings.home / "logs"

    step(Phase(2, f"through the front door: {size.history_s // 60} minutes of traffic as fast as the collector "
                  f"takes it, then {size.live_s} s live with a 10x spike, as Segment batch requests"), total)
    now0 = time.time()
    config, (generated, records) = generate(settings, now0, size)
    collector_url = state["collector"].url
    keys = create_keys(settings, [f"tenant-{i:03d}" for i in range(1, config.tenants + 1)], collector_url)
    console.print(f"  generated {len(records):,} messages (seed {config.seed}) for {config.tenants} tenants "
                  f"({generated.duplicates:,} SDK retries of a message already sent, "
                  f"{sum(generated.dead_letters.values()):,} invalid); one write key per tenant; collector at "
                  f"{collector_url} (received_at is its clock: the traffic lands in the minutes it is sent)")
    py = sys.executable
    archiver_env = {**env, "TALLY_ARCHIVE_FLUSH_S": str(DEMO_ARCHIVE_FLUSH_S)}
    with background("consumer", [py, "-m", "streaming.speed.run"], logs, env) as consumer, \
            background("archiver", [py, "-m", "orchestration.cli", "archive", "--follow"], logs,
                       archiver_env) as archiver:
        live_start, live_end, acks = stream_traffic(settings, endpoints, collector_url, keys, records, now0, size)
        ledger = acks.ledger
        drained = wait_for_spool(collector_url)
        console.print(f"  the collector acknowledged {ledger.records_total:,} messages in {acks.requests:,} requests "
                      f"({acks.retries:,} retried); its spool drained to Kinesis {drained:.1f} s after the last")
        reached = wait_for_tip(settings, time.time())
    codes = {"speed consumer": consumer.returncode, "archiver": archiver.returncode}
    clean = check_stopped(settings)
    if reached and clean and not any(codes.values()):
        console.print("  speed consumer and archiver stopped cleanly: both had reached the tip of every shard, "
                      "and the stream holds nothing after their positions")
    else:
        console.print(f"[yellow]  the consumers did not stop cleanly (tip reached: {reached}, nothing left unread: "
                      f"{clean}, exit codes: {codes}); reconciliation holds what they did not read as pending[/]")

    step(Phase(3, "the batch layer through Dagster: raw_events per hour, then dbt build"), total)
    os.environ.update({k: v for k, v in env.items() if k.startswith("TALLY_")})
    first_hour = dt.datetime.fromtimestamp(now0, tz=UTC).replace(minute=0, second=0, microsecond=0)
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

    step(Phase(4, "reconciliation: archive × warehouse × Redis"), total)
    # The traffic sent before the live part lands in the minutes it was sent in: wait until those windows
    # have closed (their end plus the allowed lateness), so they are judged; the live minutes stay pending.
    lateness = settings.allowed_lateness_s
    closes = (int(live_start) // 60 + 1) * 60 + lateness + 2
    if closes > time.time():
        with console.status(f"waiting {closes - time.time():.0f} s for the windows before the live part to close "
                            f"(their end plus the allowed lateness, {lateness} s)"):
            time.sleep(max(0.0, closes - time.time()))
    summary(settings, endpoints, ledger, now0, live_start, live_end)

    if extra is not None:
        step(Phase(5, extra_title), total)
        extra(settings, state)
    step(Phase(total, "next"), total)
    console.print("  [bold]make ui[/]    Dagster UI on http://127.0.0.1:3000 (lineage, the runs above, checks)")
    console.print("  [bold]make docs[/]  dbt docs on http://127.0.0.1:8580")
    console.print("  [bold]tally stack up[/], then [bold]tally query counts --tenant tenant-001 --minutes 240[/] or "
                  "[bold]tally serve[/] for the HTTP API and live dashboard (keys: [bold]tally keys create --tenant T[/])")
    console.print(f"demo finished in {time.time() - t0:.0f} s")


def summary(settings: Settings, endpoints: Any, ledger: Any, history_start: float, live_start: float,
            live_end: float) -> None:
    from streaming.query.api import SpeedQueries
    from streaming.reconcile.model import Verdict
    from streaming.reconcile.service import Layers, run_reconcile
    from streaming.speed import deadletters
    from streaming.speed.connect import connect

    client = connect(endpoints.redis_url)
    queries = SpeedQueries(client)
    start = dt.datetime.fromtimestamp(history_start, tz=UTC).replace(second=0, microsecond=0)
    end = dt.datetime.fromtimestamp(live_end + 120, tz=UTC).replace(second=0, microsecond=0)
    layers = Layers.from_settings(settings, resolve_endpoints(settings))
    run = run_reconcile(settings, layers, start, end, who="make demo")
    counted = int(run.inputs.speed["n"].sum())
    archived = int(run.inputs.archive["n"].sum())
    warehouse = int(run.inputs.warehouse["mart"].sum())
    dead = deadletters.counts(client)
    # Per tenant × event type × minute: the collector's acknowledgements name each request's minute.
    want = {(t, e, int(dt.datetime.fromisoformat(m.replace("Z", "+00:00")).timestamp()) // 60): n
            for t, e, m, n in ledger.count_rows()}
    speed_cells = {(r.tenant_id, r.event_type, int(r.minute)): int(r.n) for r in run.inputs.speed.itertuples() if r.n}
    mart_cells = {(r.tenant_id, r.event_type, int(r.minute)): int(r.mart) for r in run.inputs.warehouse.itertuples()
                  if r.mart}
    # Latency histograms are kept per received minute: the live minute's events, not the backfilled history.
    latency = queries.latency(dt.datetime.fromtimestamp(int(live_start) // 60 * 60, tz=UTC),
                              dt.datetime.fromtimestamp(live_end + 60, tz=UTC))
    rows: list[tuple[str, int | None, int | None]] = [
        ("records sent", ledger.records_total, None),
        ("valid events (deduplicated)", ledger.valid_events, None),
        ("counted in real time (Redis)", ledger.valid_events, counted),
        ("archived (with duplicates)", ledger.valid_events + ledger.duplicates, archived),
        ("in the warehouse (fct_events)", ledger.valid_events, warehouse),
        ("duplicates removed", ledger.duplicates, None),
        ("minute cells equal to the ledger: Redis", len(want), sum(speed_cells.get(k) == n for k, n in want.items())
         if set(speed_cells) <= set(want) else -len(set(speed_cells) - set(want))),
        ("minute cells equal to the ledger: warehouse", len(want), sum(mart_cells.get(k) == n for k, n in want.items())
         if set(mart_cells) <= set(want) else -len(set(mart_cells) - set(want))),
    ]
    rows += [(f"dead letter {reason}", ledger.dead_letters.get(reason, 0), dead.get(reason, 0))
             for reason in sorted(set(ledger.dead_letters) | set(dead))]
    table = Table("", "acknowledged by the collector", "tally", title="summary")
    for label, expected, got in rows:
        table.add_row(label, f"{expected:,}" if expected is not None else "", f"{got:,}" if got is not None else "")
    table.add_row("event-to-counter p50 / p99", "",
                  f"{latency['p50_s']} s / {latency['p99_s']} s" if latency["events"] else "n/a")
    console.print(table)

    names = {v.value for v in Verdict}
    verdicts = Table("verdict", "cells", title="reconciliation verdicts (tenant × event type × minute)")
    for verdict, n in sorted(run.result.summary.items()):
        if verdict in names and (n or verdict in ("ok", "pending")):
            verdicts.add_row(verdict, f"{n:,}")
    console.print(verdicts)
    pending = run.result.cells[run.result.cells["verdict"] == Verdict.PENDING.value]
    for reason, n in pending["pending_reason"].value_counts().items():
        console.print(f"  pending: {n:,} cells, {reason}", highlight=False, markup=False)
    console.print(f"  {run.result.summary.get('cells', 0):,} cells judged; "
                  f"{run.result.summary.get('late_events', 0):,} events arrived after their window closed and are "
                  "reported as late, not as loss")
    loss = "[red]unexplained loss found[/]" if run.result.unexplained_loss else "[green]no unexplained loss[/]"
    console.print(f"  {loss}; report: [bold]{run.report_path}[/]")
    out = settings.home / "runs" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({
        "rows": [{"row": label, "ledger": expected, "tally": got} for label, expected, got in rows],
        "verdicts": {k: v for k, v in run.result.summary.items()},
        "pending_reasons": {str(k): int(v) for k, v in pending["pending_reason"].value_counts().items()},
        "unexplained_loss": run.result.unexplained_loss,
        "report": str(run.report_path),
    }, indent=2))


if __name__ == "__main__":
    main()
