"""`make demo-migration`: `make demo` as a parallel run beside a legacy pipeline.

Before the demo starts: a PostgreSQL server (initdb + pg_ctl under ``$TALLY_HOME/postgres``, a free loopback
port) and a legacy collector stand-in (:mod:`streaming.migration.legacy_collector`) behind it; the collector
`tally stack up` starts forwards every request it accepts there (``TALLY_COLLECTOR_FORWARD_URL``). After
`make demo`'s reconciliation, one more phase: the forward spool drained, the parallel-run report of today
(`tally migrate report` on the same settings), its legacy losses checked against the stand-in's ledger,
and the cutover verdict with its reason (also written to ``$TALLY_HOME/runs/demo/migration.json``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from orchestration.demo import Size, console, demo_settings, run
from orchestration.demo_front_door import EVENT_MAP
from orchestration.environment import resolve_endpoints
from streaming.settings import SettingError, Settings, load_settings

UTC = dt.timezone.utc


def _tenant_lookup(settings: Settings) -> Any:
    """The legacy's write keys: the same table as tally's (read once the stack is up, refreshed)."""
    holder: dict[str, Any] = {}

    def tenant_for(key: str) -> str | None:
        if "keys" not in holder:
            from streaming.collector.writekeys import WriteKeys, scan_table

            dynamodb = resolve_endpoints(settings).client("dynamodb", settings.aws_region)
            holder["keys"] = WriteKeys(lambda: scan_table(dynamodb, settings.collector.write_key_table),
                                       settings.home / "legacy-write-keys.json", 2).start()
        return holder["keys"].tenant_for(key)

    return tenant_for


def _wait_forwarded(settings: Settings, timeout_s: float = 180.0) -> dict[str, Any]:
    from streaming.collector.forward import forward_status

    deadline = time.time() + timeout_s
    while True:
        status = forward_status(settings.collector.state_dir) or {}
        if status.get("depth_bytes", 1) == 0 or time.time() > deadline:
            return status
        time.sleep(0.5)


def parallel_run(legacy: Any, config_path: Path, settings: Settings, state: dict[str, Any]) -> None:
    from streaming.migration.config import load_config
    from streaming.migration.legacy import LegacySource
    from streaming.migration.report import day_label, hour_label, write_report
    from streaming.migration.service import build_report
    from streaming.reconcile.service import Layers

    status = _wait_forwarded(settings)
    legacy.stop()
    ledger = legacy.ledger
    console.print(f"  the collector forwarded {status.get('forwarded', 0):,} requests to the legacy collector at "
                  f"{legacy.url} ({status.get('failures', 0)} attempts retried; forward spool empty: "
                  f"{status.get('depth_bytes') == 0}); the legacy counted {ledger.counted:,} rows into PostgreSQL, "
                  f"lost {len(ledger.lost):,} events in its busy seconds and counted {len(ledger.double_counted):,} twice "
                  "(its ledger)")
    settings = dataclasses.replace(settings, migration_config=str(config_path), migration_tolerance=0.0)
    today = dt.datetime.now(UTC).date()
    layers = Layers.from_settings(settings, resolve_endpoints(settings))
    report = build_report(settings, layers, LegacySource(load_config(str(config_path))),
                          today, 1)
    paths = write_report(report, settings.home / "reports")
    cells = report.cells
    per_tenant = cells.groupby("tenant_id")[["tally", "legacy"]].sum()
    per_tenant["deviation"] = per_tenant["legacy"] - per_tenant["tally"]
    table = Table("tenant", "tally", "legacy", "deviation", title=f"{day_label(report.days[0].day)}: the tenants "
                  "the legacy lost most of")
    for tenant, row in per_tenant.sort_values("deviation").head(8).iterrows():
        share = row["deviation"] / row["tally"] if row["tally"] else 0.0
        table.add_row(str(tenant), f"{row['tally']:,}", f"{row['legacy']:,}", f"{row['deviation']:+,} ({share:+.1%})")
    console.print(table)
    counts = cells["verdict"].value_counts()
    console.print("  cells (tenant × event type × hour): " + ", ".join(f"{v} {int(n):,}" for v, n in counts.items()),
                  highlight=False)
    judged = cells[cells["verdict"] != "pending"]
    lost, doubled = ledger.lost_cells(), ledger.doubled_cells()
    expected = {c for c in set(lost) | set(doubled) if lost[c] > doubled[c]}
    found = {(r.tenant_id, r.event_type, int(r.hour)) for r in judged.itertuples() if r.verdict == "legacy_missing"}
    judged_keys = {(r.tenant_id, r.event_type, int(r.hour)) for r in judged.itertuples()}
    agree = found == (expected & judged_keys)
    console.print(f"  legacy_missing cells equal to the stand-in's ledger: {'[green]yes[/]' if agree else '[red]no[/]'} "
                  f"({len(found)} cells; every one with the exact event_ids tally has and the legacy lacks)")
    for r in judged[judged["verdict"] == "legacy_missing"].head(3).itertuples():
        console.print(f"    {hour_label(r.hour)} {r.tenant_id} {r.event_type}: tally {r.tally}, legacy {r.legacy}; "
                      f"e.g. {', '.join(r.missing_ids[:2])}", highlight=False, markup=False)
    tally_loss = int(counts.get("tally_loss", 0))
    console.print(f"  tally's own layers: {'[green]reconcile[/]' if not tally_loss else f'[red]{tally_loss} cells lost[/]'} "
                  "where the legacy is judged")
    verdict = "[green]READY[/]" if report.cutover.ready else "[yellow]NOT READY[/]"
    console.print(f"  cutover {verdict}: {report.cutover.reason}", highlight=False)
    console.print(f"  report: [bold]{paths['html']}[/] (and .md, .json); every day: [bold]tally migrate report --days 14[/] "
                  "or the Dagster asset migration/parallel_run_report")
    summary = {"forwarded": status.get("forwarded", 0), "forward_spool_empty": status.get("depth_bytes") == 0,
               "legacy_counted": ledger.counted, "legacy_lost": len(ledger.lost),
               "legacy_double_counted": len(ledger.double_counted), "legacy_missing_cells": len(found),
               "legacy_missing_equal_to_ledger": agree, "tally_loss_cells": tally_loss,
               "verdicts": {str(v): int(n) for v, n in counts.items()}, "cutover_ready": report.cutover.ready,
               "cutover_reason": report.cutover.reason}
    out = settings.home / "runs" / "demo" / "migration.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    from streaming.collector.segment import EventMap
    from streaming.migration.legacy_collector import LegacyCollector
    from streaming.migration.standin import StandInConfig, write_config
    from streaming.stack.postgres_local import PostgresServer

    settings = demo_settings()
    pg_dir = settings.home / "postgres"
    if pg_dir.exists():
        shutil.rmtree(pg_dir)
    pg_dir.mkdir(parents=True)
    postgres = PostgresServer.start(pg_dir)
    legacy = None
    t0 = time.time()
    try:
        dsn = postgres.create_database("legacy")
        legacy = LegacyCollector(dsn, _tenant_lookup(settings), EventMap(yaml.safe_load(EVENT_MAP)),
                                 StandInConfig(drop_rate=0.05, double_rate=0.003, late_minutes=20)).start()
        console.print(f"legacy pipeline stand-in: PostgreSQL at 127.0.0.1:{postgres.port} (table legacy_events), its "
                      f"collector at {legacy.url}; tally's collector forwards every accepted request there")
        os.environ["TALLY_COLLECTOR_FORWARD_URL"] = legacy.url
        os.environ.setdefault("TALLY_COLLECTOR_FORWARD_MAX_BACKOFF_S", "2")
        settings = load_settings()
        config_path = settings.home / "migration.yaml"
        tenants = [f"tenant-{i:03d}" for i in range(1, Size.at(settings.demo_scale).tenants + 1)]
        write_config(config_path, dsn, tenants, late_minutes=0)  # today's report: the stand-in is not behind here
        run(settings, t0, extra=lambda s, state: parallel_run(legacy, config_path, s, state),
            extra_title="the parallel run: the legacy pipeline's counts against tally's")
    except SettingError as exc:
        console.print(f"[bold red]tally:[/] {exc}", highlight=False)
        sys.exit(2)
    finally:
        from streaming.stack import manager

        if legacy is not None:
            legacy.stop()
        stopped = manager.down(settings)
        postgres.stop()
        console.print(f"stopped what the demo started: {', '.join([*stopped, 'postgresql', 'the legacy stand-in'])}")


if __name__ == "__main__":
    main()
