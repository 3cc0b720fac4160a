"""`tally migrate`: the parallel run beside a legacy pipeline.

``tally migrate report`` exit codes, for cron and CI: 0 = the cutover is ready; 1 = not ready (the
reason is printed); 2 = it could not run (TALLY_MIGRATION_CONFIG wrong, a service down): one sentence.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

EXIT_READY, EXIT_NOT_READY = 0, 1
UTC = dt.timezone.utc


def register(main: click.Group) -> None:
    from orchestration.cli import _settings, user_errors
    from orchestration.output import format_option, resolved

    @main.group()
    def migrate() -> None:
        """Run beside a legacy pipeline: compare its counts with tally's and say when to cut over."""

    @migrate.command("report")
    @click.option("--days", default=None, type=click.IntRange(1, 366),
                  help="Days to report, ending with --day (default TALLY_MIGRATION_READY_DAYS).")
    @click.option("--day", "last_day", default=None, help="Last day (YYYY-MM-DD, UTC); default yesterday.")
    @click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
                  help="Where the HTML, Markdown and JSON go (default $TALLY_HOME/reports).")
    @format_option(choices=("table", "json"))
    @user_errors
    def report(days: int | None, last_day: str | None, out_dir: Path | None, fmt: str | None) -> None:
        """Per day and tenant: tally vs legacy, the legacy's losses with event ids, the cutover verdict."""
        from orchestration.environment import resolve_endpoints
        from orchestration.output import console, echo_json
        from streaming.migration.config import PostgresSource
        from streaming.migration.report import day_label, report_json, write_report
        from streaming.migration.service import build_report, day_range, legacy_source
        from streaming.reconcile.service import Layers

        settings = _settings()
        source = legacy_source(settings)
        try:
            day = dt.date.fromisoformat(last_day) if last_day else dt.datetime.now(UTC).date() - dt.timedelta(days=1)
        except ValueError:
            raise click.BadParameter(f"{last_day!r} is not a date: give --day as YYYY-MM-DD") from None
        days = days or settings.migration_ready_days
        layers = None
        if not isinstance(source.config.source, PostgresSource):
            # S3 exports are read with tally's S3 client, where the environment (or the local stack) says.
            layers = Layers.from_settings(settings, resolve_endpoints(settings))
            source.s3 = layers.s3
        # The legacy side first: a wrong configuration is said before any tally service is asked.
        legacy = source.counts(*day_range(day, days))
        layers = layers or Layers.from_settings(settings, resolve_endpoints(settings))
        built = build_report(settings, layers, source, day, days, legacy=legacy)
        paths = write_report(built, out_dir or settings.home / "reports")
        code = EXIT_READY if built.cutover.ready else EXIT_NOT_READY
        if resolved(fmt) == "json":
            echo_json({**report_json(built), "report_paths": {k: str(v) for k, v in paths.items()}, "exit_status": code})
        else:
            for v in built.days:
                cells = built.day_cells(v.day)
                ours = int(cells["tally"].sum()) if len(cells) else 0
                theirs = int(cells["legacy"].sum()) if len(cells) else 0
                console.print(f"{day_label(v.day)}  tally {ours:,}  legacy {theirs:,}  deviation {theirs - ours:+,}  "
                              f"{'good' if v.good else 'not good'}: {v.reason}", markup=False, highlight=False)
            findings = built.findings
            for verdict in ("legacy_missing", "legacy_extra", "tally_loss", "pending"):
                n = int((findings["verdict"] == verdict).sum()) if len(findings) else 0
                if n:
                    console.print(f"{verdict}: {n} cells", markup=False, highlight=False)
            state = "READY" if built.cutover.ready else "NOT READY"
            console.print(f"cutover {state}: {built.cutover.reason}", markup=False, highlight=False)
            console.print(f"report {paths['html']} (and .md, .json)", markup=False, highlight=False)
        sys.exit(code)
