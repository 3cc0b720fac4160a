"""`tally` subcommands of the batch layer: `tally archive`, `tally batch build`."""

from __future__ import annotations

import datetime as dt
import signal
import threading

import click


def _hour(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    text = value.replace("Z", "+00:00")
    for fmt in ("%Y-%m-%d-%H:%M", "%Y-%m-%dT%H"):
        try:
            return dt.datetime.strptime(value, fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    parsed = dt.datetime.fromisoformat(text)
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


def register(main: click.Group) -> None:
    """Add this domain's commands to the `tally` group."""
    from orchestration.cli import user_errors
    from orchestration.output import console

    @main.command("archive")
    @click.option("--follow/--until-caught-up", default=False, show_default=True,
                  help="Keep archiving until Ctrl-C (waiting out services that are down, with a log line per "
                       "retry), or stop once every shard is read to its current end (a service down: exit 2).")
    @click.option("--timeout-s", default=600.0, show_default=True, help="Give up catching up after this long.")
    @user_errors
    def archive(follow: bool, timeout_s: float) -> None:
        """Archive the stream to S3 raw/ (its own leases, group "archiver"; resumes from the archive)."""
        from orchestration.batch import run_archiver
        from streaming.settings import load_settings

        settings = load_settings()
        stop = threading.Event()
        if follow:
            from streaming.logs import configure

            configure("archiver", settings)
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            console.print(f"archiving {settings.stream_name} to s3://{settings.bucket}/raw/ (Ctrl-C stops)")
            try:
                run_archiver(settings, until_caught_up=False, stop=stop)
            except KeyboardInterrupt:
                stop.set()
        else:
            run_archiver(settings, until_caught_up=True, timeout_s=timeout_s)
        console.print(f"archive of stream {settings.stream_name} committed in s3://{settings.bucket}/raw/")

    @main.group("batch")
    def batch() -> None:
        """The batch layer: load archive hours into the warehouse and build the dbt marts."""

    @batch.command("build")
    @click.option("--from", "first", default=None, help="First hour (e.g. 2026-01-01T00 or 2026-01-01-00:00); default: the archive's first.")
    @click.option("--to", "last", default=None, help="Last hour, inclusive; default: the archive's last.")
    @user_errors
    def build(first: str | None, last: str | None) -> None:
        """Backfill raw_events over the hours (one run per stretch of hours), then dbt build the marts.

        The runs are recorded in DAGSTER_HOME, by default $TALLY_HOME/dagster_home (as `make` sets it),
        so they show in the Dagster UI (`make ui`)."""
        import os
        import warnings

        import dagster as dg

        from orchestration.batch import build_marts
        from streaming.settings import load_settings

        # Dagster's notes about the stability of APIs tally uses are for tally's developers, not its users.
        for category in (dg.PreviewWarning, dg.BetaWarning):
            warnings.filterwarnings("ignore", category=category)

        settings = load_settings()
        if not os.environ.get("DAGSTER_HOME"):
            os.environ["DAGSTER_HOME"] = str((settings.home / "dagster_home").resolve())
        report = build_marts(_hour(first), _hour(last))
        status = "succeeded" if report.success else "failed"
        console.print(f"batch build {status}: {report.hours} hour(s), runs {', '.join(r[:8] for r in report.runs)} "
                      f"(recorded in {os.environ['DAGSTER_HOME']})", style="green" if report.success else "red")
        if not report.success:
            raise SystemExit(1)
