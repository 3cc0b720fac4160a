"""`tally alerts test`: send a test message to every channel in TALLY_ALERT_URLS and say which took it.

Channels are shown in apprise's privacy form (tokens and passwords masked), never as configured.
Exit 0 every channel took it, 1 some did not, 2 a setting (none configured, or a URL apprise cannot use).
"""

from __future__ import annotations

import datetime as dt
import socket

import click

EXIT_NOT_DELIVERED = 1


def register(main: click.Group) -> None:
    """Add this domain's commands to the `tally` group."""
    from orchestration.cli import user_errors
    from orchestration.output import console

    @main.group("alerts")
    def alerts() -> None:
        """tally's own alerts (loss, stale layers, failed runs): the channels in TALLY_ALERT_URLS."""

    @alerts.command("test")
    @user_errors
    def alerts_test() -> None:
        """Send a test message to every channel in TALLY_ALERT_URLS."""
        from streaming.alerts.notify import Notifier
        from streaming.logs import configure
        from streaming.settings import SettingError, load_settings

        settings = load_settings()
        configure("alerts", settings)
        if not settings.alert_urls:
            raise SettingError("TALLY_ALERT_URLS", None, "is not set, so tally's alerts are only logged",
                               "set TALLY_ALERT_URLS to one or more apprise URLs (slack://…, mailto://…, "
                               "pagerduty://…, json://host/path), separated by spaces")
        notifier = Notifier(settings.alert_urls)
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        results = notifier.send("tally test alert", f"A test message from `tally alerts test` on {socket.gethostname()} "
                                f"at {now}: this channel receives tally's alerts.", "info")
        for channel in notifier.channels:
            console.print(f"{'delivered' if results.get(channel.id) else 'NOT delivered'}: {channel.shown}")
        if not all(results.values()):
            raise SystemExit(EXIT_NOT_DELIVERED)
