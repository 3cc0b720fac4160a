"""Structured logs for tally's processes: one event per line, stable field names, nothing secret.

``TALLY_LOG_FORMAT=json`` (the default when stderr is not a terminal) writes one JSON object a line:
``ts`` (UTC, ISO-8601), ``level``, ``component`` (``speed``, ``archiver``, ``query``, ``collector``,
``alerts``, ``cli``), ``logger``, ``message``, and the fields a call passes with ``extra=`` — ``group``,
``shard``, ``worker``, ``tenant`` where it is relevant, counts (``records``, ``objects``, ``bytes``,
``applied``, ``dead_letters``), ``duration_s``, ``port``, ``attempt`` — and ``exception`` (the traceback,
as one string). ``text`` keeps the classic ``time level logger: message`` lines for a terminal.

Every line, whatever its origin (tally's code, botocore, uvicorn), passes through :class:`Scrub`: the
values of the secret settings, passwords inside URLs and tally API keys (``tly_…``) are replaced by
``***``. Personal ids (user ids, anonymous ids) are never passed to a log call: tally logs positions,
counts and tenants, not events.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog

from streaming.settings import SECRET_SETTINGS, Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@")
_API_KEY = re.compile(r"tly_[A-Za-z0-9_-]{20,}")
#: tally's own loggers log at INFO; third-party libraries only from WARNING on.
_OWN = ("streaming", "orchestration", "assets", "tally")


class Scrub(logging.Filter):
    """Replace secrets in a record's message and traceback before any handler formats it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = _URL_PASSWORD.sub(r"\g<scheme>:***@", text)
        return _API_KEY.sub("tly_***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.clean(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.exc_text:
            record.exception = record.exc_text
        return True


def url_secrets(url: str) -> list[str]:
    """The parts of an alert URL that may be credentials: the whole URL, its password, its long path
    segments (webhook tokens: ``slack://TokenA/TokenB/TokenC``) and credential-like query values."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    found = [url, parts.password or ""]
    host = parts.netloc.rsplit("@", 1)[-1].split(":")[0]
    # A dotless "host" is a token in most apprise schemes (slack://TokenA/...); a hostname is no secret.
    found += [seg for seg in ([host] if "." not in host and host != "localhost" else []) + parts.path.split("/")
              if len(seg) >= 8]
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in ("pass", "password", "token", "key", "apikey",
                                                                      "secret", "user")]
    return found


def _message_key(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event["message"] = event.pop("event", "")
    event.pop("exc_text", None)
    return event


def _component(component: str) -> Any:
    def add(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("component", component)
        return event

    return add


def json_formatter(component: str) -> logging.Formatter:
    """A stdlib formatter that writes each record as one JSON object (structlog's ProcessorFormatter)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _message_key,
            _component(component),
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
    )


def resolved_format(settings: Settings | None, stream: TextIO) -> str:
    if settings is not None and settings.log_format:
        return settings.log_format
    return "text" if getattr(stream, "isatty", lambda: False)() else "json"


def configure(component: str, settings: Settings | None = None, stream: TextIO | None = None) -> None:
    """Send every log record of this process to ``stream`` (stderr) in the configured format, scrubbed.
    Replaces handlers set earlier (one handler, so a line is never written twice)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    secrets: list[str] = []
    if settings is not None:
        secrets += [settings.privacy_salt, settings.snowflake.password or "",
                    settings.snowflake.private_key_passphrase or ""]
        for url in settings.alert_urls:
            secrets += url_secrets(url)
    import os

    secrets += [os.environ.get(name, "") for name in SECRET_SETTINGS]
    handler.addFilter(Scrub(secrets))
    if resolved_format(settings, stream) == "json":
        handler.setFormatter(json_formatter(component))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in _OWN:
        logging.getLogger(name).setLevel(logging.INFO)
