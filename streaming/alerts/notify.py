"""Delivery through apprise: one setting (``TALLY_ALERT_URLS``) lists every channel (Slack, email,
PagerDuty, webhooks...). Channels are named by a short hash of their URL and shown with apprise's privacy
form (``slack://T...A/****/...``): a URL's tokens and passwords never reach a log line or the console."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: apprise's notify types by tally's message kinds.
_TYPES = {"failure": "failure", "warning": "warning", "resolved": "success", "info": "info"}


@dataclass(frozen=True)
class Channel:
    """One alert URL: ``id`` (a hash, stored in incident records) and ``shown`` (apprise's private form)."""

    id: str
    shown: str
    url: str


def channels(urls: Sequence[str]) -> list[Channel]:
    from apprise import Apprise

    out = []
    for url in urls:
        plugin = Apprise.instantiate(url)
        shown = plugin.url(privacy=True) if plugin is not None else url.split("://", 1)[0] + "://…"
        out.append(Channel(hashlib.sha256(url.encode()).hexdigest()[:12], shown, url))
    return out


class Notifier:
    """Sends a message to each channel; says which ones took it."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.channels = channels(urls)

    def send(self, title: str, body: str, kind: str = "failure",
             only: Iterable[str] | None = None) -> dict[str, bool]:
        """Channel id -> delivered, for every channel (or only those in ``only``)."""
        from apprise import Apprise, NotifyFormat, NotifyType

        wanted = set(only) if only is not None else None
        results: dict[str, bool] = {}
        for channel in self.channels:
            if wanted is not None and channel.id not in wanted:
                continue
            sender = Apprise()
            sender.add(channel.url)
            ok = bool(sender.notify(title=title, body=body, notify_type=NotifyType(_TYPES.get(kind, "info")),
                                    body_format=NotifyFormat.TEXT))
            if not ok:
                log.warning("alert not delivered to %s", channel.shown, extra={"channel": channel.id})
            results[channel.id] = ok
        return results
