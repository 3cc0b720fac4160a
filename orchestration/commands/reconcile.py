"""`tally` subcommands of reconciliation: reconcile, heal, heals.

``tally reconcile`` exits 0 when every closed cell agrees (pending windows and late events are not
loss), 1 on unexplained loss or duplication, 2 on a configuration error: fit for cron and CI.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

UTC = dt.timezone.utc
EXIT_LOSS = 1


def _when(text: str | None, default: dt.datetime) -> dt.datetime:
    if text is None:
        return default
    if text == "now":
        return dt.datetime.now(UTC)
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _window(start: str | None, end: str | None, hours: float) -> tuple[dt.datetime, dt.datetime]:
    stop = _when(end, dt.datetime.now(UTC))
    stop = stop.replace(second=0, microsecond=0) + (dt.timedelta(minutes=1) if stop.second or stop.microsecond else dt.timedelta())
    begin = _when(start, stop - dt.timedelta(hours=hours))
    return begin, stop


def print_verdicts(console: Any, run: Any, limit: int = 30) -> None:
    """The verdict table: counts per verdict, then the findings (worst first), gaps and late events."""
    from rich.table import Table

    from streaming.reconcile.model import LOSS_VERDICTS
    from streaming.reconcile.report import findings_table, rollup_table, sequence_table, verdict_line

    result = run.result
    counts = Table("verdict", "cells", title="reconciliation verdicts")
    for verdict, n in result.summary.items():
        if verdict in ("cells", "late_events"):
            continue
        style = "red" if verdict in LOSS_VERDICTS and n else ("yellow" if verdict == "pending" and n else "")
        counts.add_row(f"[{style}]{verdict}[/]" if style else verdict, f"{n:,}")
    console.print(counts)
    findings = findings_table(result, limit=10_000)
    findings = findings[findings["verdict"] != "pending"]
    if len(findings):
        table = Table(*findings.columns, title=f"findings ({len(findings):,}; first {min(limit, len(findings))})")
        for row in findings.head(limit).itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        console.print(table)
    sequences = sequence_table(result)
    sequences = sequences[sequences["verdict"] != "explained"]
    if len(sequences):
        table = Table(*sequences.columns, title="source sequence findings")
        for row in sequences.head(limit).itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        console.print(table)
    rollups = rollup_table(result)
    if len(rollups):
        table = Table(*rollups.columns, title="served hour/day counters that disagree with their minutes")
        for row in rollups.head(limit).itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        console.print(table)
    ids = result.event_ids
    if len(ids):
        console.print(f"{len(ids):,} event ids missing or extra in the warehouse, e.g. "
                      + ", ".join(f"{r.event_id} ({r.kind} in {r.table})" for r in ids.head(5).itertuples()))
    console.print(("[bold red]" if result.unexplained_loss else "[bold green]") + verdict_line(result) + "[/]")
    if run.report_path is not None:
        console.print(f"report: {run.report_path}")


def register(main: click.Group) -> None:
    """Add this domain's commands to the `tally` group."""
    from orchestration.cli import _settings, console, user_errors

    window_options = [
        click.option("--from", "start", default=None, help="Start of the window (ISO-8601, UTC); default --hours before --to."),
        click.option("--to", "end", default=None, help="End of the window (ISO-8601 or 'now'); default now."),
        click.option("--hours", default=24.0, show_default=True, help="Window length when --from is not given."),
        click.option("--speed-group", default="speed", show_default=True, help="The speed consumer's group (its lease checkpoints are the speed watermark)."),
    ]

    def with_window(fn: Any) -> Any:
        for option in reversed(window_options):
            fn = option(fn)
        return fn

    def _run(start: str | None, end: str | None, hours: float, speed_group: str, who: str | None = None) -> Any:
        from streaming.reconcile.service import Layers, run_reconcile

        settings = _settings()
        begin, stop = _window(start, end, hours)
        layers = Layers.from_settings(settings)
        layers.speed_group = speed_group
        return settings, layers, run_reconcile(settings, layers, begin, stop, who=who)

    @main.command()
    @with_window
    @click.option("--limit", default=30, show_default=True, help="Findings to print.")
    @click.option("--exit-zero", is_flag=True, help="Exit 0 even on unexplained loss (demos; not for cron or CI).")
    @user_errors
    def reconcile(start: str | None, end: str | None, hours: float, speed_group: str, limit: int,
                  exit_zero: bool) -> None:
        """Cross-check archive, warehouse and Redis; print the verdicts; exit 1 on unexplained loss."""
        _, _, run = _run(start, end, hours, speed_group)
        print_verdicts(console, run, limit)
        if run.result.unexplained_loss and not exit_zero:
            sys.exit(EXIT_LOSS)

    @main.command()
    @with_window
    @click.option("--who", default=None, help="Recorded in the heal log; default the OS user.")
    @click.option("--dry-run", is_flag=True, help="Show what would be healed; write nothing.")
    @user_errors
    def heal(start: str | None, end: str | None, hours: float, speed_group: str, who: str | None, dry_run: bool) -> None:
        """Overwrite Redis counters, unique visitors, top pages and segments of closed windows where batch
        truth is complete and Redis differs."""
        import getpass

        from streaming.reconcile.heal import heal as do_heal
        from streaming.segments import load_rules
        from streaming.speed.run import retention

        settings, layers, run = _run(start, end, hours, speed_group, who)
        record = do_heal(layers.redis, run.result, who=who or getpass.getuser(), reports_dir=settings.home / "reports",
                         run_id=run.info.run_id, retention=retention(settings), dry_run=dry_run,
                         warehouse=layers.warehouse, window=(run.info.start_minute, run.info.end_minute),
                         rules=load_rules())
        verb = "would heal" if dry_run else "healed"
        n = len(record.cells) if dry_run else record.healed
        console.print(f"{verb} {n:,} cells" + (f", skipped {record.skipped:,} that changed since they were read"
                                              if record.skipped else "")
                      + ("" if dry_run or not record.cells else f"; heal {record.heal_id} recorded in "
                         f"{settings.home / 'reports' / 'heals.jsonl'} and Redis"))
        by_kind = {k: [i for i in record.items if i.kind == k and i.status in ("healed", "planned")]
                   for k in ("uniques", "top_pages", "segment")}
        if record.items:
            console.print(f"{verb} {len(by_kind['uniques']):,} unique-visitor hours, {len(by_kind['top_pages']):,} "
                          f"top-page paths, {len(by_kind['segment']):,} segments"
                          + (f"; skipped {sum(1 for i in record.items if i.status == 'skipped'):,} that moved"
                             if any(i.status == "skipped" for i in record.items) else ""))
        for cell in record.cells[:20]:
            minute = dt.datetime.fromtimestamp(cell.minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")
            console.print(f"  {cell.tenant_id} {cell.event_type} {minute}: {cell.old} -> {cell.new} ({cell.status})")

    @main.command()
    @click.option("--last", default=10, show_default=True, help="How many heal records to show.")
    @user_errors
    def heals(last: int) -> None:
        """Show the newest heal records (who, when, how many cells)."""
        from streaming.reconcile.heal import heal_log
        from streaming.speed.connect import connect
        from streaming.stack.manager import resolve_endpoints

        client = connect(resolve_endpoints(_settings()).redis_url)
        for entry in heal_log(client, last):
            console.print(f"{entry['at']} {entry['who']}: healed {entry['healed']:,}, skipped {entry['skipped']:,} "
                          f"(heal {entry['heal_id']}, run {entry['run_id']})")
