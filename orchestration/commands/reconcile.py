"""`tally` subcommands of reconciliation: reconcile, heal, heals.

``tally reconcile`` exit codes, for cron and CI:

- 0: every closed cell agrees (pending windows and late events are not findings);
- 1: unexplained loss: a layer lost events (``*_missing``, ``upstream_gap``), whatever else was found;
- 3: no loss, but events counted more than once (``*_extra``, ``upstream_duplicate``) or served
  hour/day counters that disagree with their minutes (``*_rollup_mismatch``): `tally heal` repairs Redis;
- 2: it could not run (a setting, a service, a bad option): one sentence on stderr.

Output: ``--format table`` (a terminal's default), ``plain`` (the default when stdout is not a terminal:
one complete ``kind key=value ...`` line per count and per finding, nothing cut), ``json`` (the report
written under ``$TALLY_HOME/reports/`` with every finding) or ``csv`` (every finding, one row each, its
section in the first column).
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

UTC = dt.timezone.utc
EXIT_CODES = {"ok": 0, "loss": 1, "duplicates": 3, "mismatch": 3}
EXIT_LOSS = EXIT_CODES["loss"]


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


_KINDS = {"cells": "cell", "sequences": "sequence", "rollups": "rollup", "event_ids": "event_id", "late": "late"}


def print_report(run: Any, fmt: str, limit: int = 30) -> None:
    """The run in ``fmt``: counts with what each counts, every finding (``table``: the first ``limit`` of
    each kind, pending cells and explained gaps as counts only), the outcome and the report's path."""
    from orchestration.output import console, echo_json, plain_line, print_rows, write_csv
    from streaming.reconcile.report import (
        HEADLINES, display, finding_frames, findings_table, outcome, report_json, verdict_counts, verdict_line,
    )

    result = run.result
    status = outcome(result)
    path = str(run.report_path) if run.report_path is not None else None
    if fmt == "json":
        echo_json({**report_json(result, run.info), "report_path": path, "exit_status": EXIT_CODES[status]})
        return
    counts = verdict_counts(result)
    frames = {name: display(frame) for name, frame in finding_frames(result).items()}
    if fmt == "csv":
        import pandas as pd

        # object columns: a count stays 3, not 3.0, where another section leaves the column empty
        parts = [pd.DataFrame(counts).astype(object).assign(section="count")]
        parts += [frame.astype(object).assign(section=_KINDS[name]) for name, frame in frames.items() if len(frame)]
        table = pd.concat(parts, ignore_index=True)
        table = table[["section"] + [c for c in table.columns if c != "section"]]
        write_csv(list(table.columns), table.astype(object).where(table.notna(), None).itertuples(index=False))
        return
    if fmt == "plain":
        for row in counts:
            click.echo(plain_line("count", row))
        for name, frame in frames.items():
            for row in frame.to_dict("records"):
                click.echo(plain_line(_KINDS[name], row))
        click.echo(plain_line("result", {"outcome": status, "exit_status": EXIT_CODES[status],
                                         "headline": verdict_line(result)}))
        if path:
            click.echo(plain_line("report", {"path": path}))
        return
    print_rows("table", "count", ("verdict", "count", "of", "detail"),
               ((r["verdict"], r["count"], r["of"], r["detail"]) for r in counts), title="reconciliation verdicts")
    cells = findings_table(result, limit=10**9)
    cells = cells[cells["verdict"] != "pending"] if len(cells) else cells
    titled = [(cells, f"cell findings ({len(cells):,}; first {min(limit, len(cells)):,})"),
              (frames["sequences"][frames["sequences"]["verdict"] != "explained"] if len(frames["sequences"])
               else frames["sequences"], "source sequence findings"),
              (frames["rollups"], "served hour/day counters that disagree with their minutes"),
              (frames["event_ids"], "event ids missing or extra in the warehouse")]
    for frame, title in titled:
        if len(frame):
            print_rows("table", "finding", list(frame.columns), frame.head(limit).itertuples(index=False), title=title)
    console.print(verdict_line(result), style="bold red" if status == "loss" else
                  ("bold yellow" if status != "ok" else "bold green"))
    assert status in HEADLINES
    if path:
        console.print(f"report: {path}")


def register(main: click.Group) -> None:
    """Add this domain's commands to the `tally` group."""
    from orchestration.cli import _settings, user_errors
    from orchestration.output import FORMATS, console, echo_json, format_option, print_rows, resolved

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
        from orchestration.environment import resolve_endpoints
        from streaming.reconcile.service import Layers, run_reconcile

        settings = _settings()
        begin, stop = _window(start, end, hours)
        layers = Layers.from_settings(settings, resolve_endpoints(settings))
        layers.speed_group = speed_group
        return settings, layers, run_reconcile(settings, layers, begin, stop, who=who)

    @main.command()
    @with_window
    @click.option("--limit", default=30, show_default=True, help="Findings of each kind in --format table "
                  "(plain, json and csv are always complete).")
    @format_option(choices=FORMATS)
    @click.option("--exit-zero", is_flag=True, help="Exit 0 whatever was found (demos; not for cron or CI).")
    @user_errors
    def reconcile(start: str | None, end: str | None, hours: float, speed_group: str, limit: int,
                  fmt: str | None, exit_zero: bool) -> None:
        """Cross-check archive, warehouse and Redis; print the verdicts.

        Exit 0 when every closed cell agrees, 1 on unexplained loss, 3 on duplicates or roll-up
        mismatches without loss, 2 when it cannot run. Not on a terminal, the output is complete
        (one line per finding); the JSON report under $TALLY_HOME/reports/ holds every finding."""
        from streaming.reconcile.report import outcome

        _, _, run = _run(start, end, hours, speed_group)
        print_report(run, resolved(fmt), limit)
        code = EXIT_CODES[outcome(run.result)]
        if code and not exit_zero:
            sys.exit(code)

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
        from streaming.literal import printable

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
            console.print(f"  {printable(cell.tenant_id)} {cell.event_type} {minute}: {cell.old} -> {cell.new} ({cell.status})")

    @main.command()
    @click.option("--last", default=10, show_default=True, help="How many heal records to show.")
    @format_option()
    @user_errors
    def heals(last: int, fmt: str | None) -> None:
        """Show the newest heal records (who, when, how many cells)."""
        from streaming.literal import printable
        from streaming.reconcile.heal import heal_log
        from streaming.speed.connect import connect
        from orchestration.environment import resolve_endpoints

        client = connect(resolve_endpoints(_settings()).redis_url)
        entries = heal_log(client, last)
        fmt = resolved(fmt)
        if fmt == "json":
            echo_json(entries)
        elif fmt == "table":
            columns = ("at", "who", "healed", "skipped", "heal_id", "run_id")
            print_rows(fmt, "heal", columns, ([e.get(c) for c in columns] for e in entries))
        else:
            for entry in entries:
                console.print(f"{entry['at']} {printable(entry['who'])}: healed {entry['healed']:,}, skipped "
                              f"{entry['skipped']:,} (heal {entry['heal_id']}, run {entry['run_id']})")
