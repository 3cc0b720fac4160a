"""Every tally setting: its environment variable, default, meaning and validation.

Settings are read by calling :func:`load_settings` (when definitions are built, when a command starts),
never at import time. A wrong value raises :class:`SettingError`, whose message names the variable, the
value, what is wrong and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class SettingError(ValueError):
    """A configuration value is missing or wrong; the message names the setting and the fix."""

    def __init__(self, name: str, value: object, problem: str, fix: str) -> None:
        self.setting = name
        shown = "<unset>" if value is None else repr(value)
        super().__init__(f"{name}={shown} {problem}. Fix: {fix}")


@dataclass(frozen=True)
class Setting:
    """One documented setting; the README's settings table is generated from these."""

    name: str
    default: str | None
    meaning: str
    parse: Callable[[str, str], Any]


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(name, raw, "is not a whole number", f"set {name} to a positive integer") from None
    if value <= 0:
        raise SettingError(name, raw, "must be greater than zero", f"set {name} to a positive integer")
    return value


def _dead_letter_ttl(name: str, raw: str) -> int:
    value = _positive_int(name, raw)
    if value < 86_400:
        raise SettingError(name, raw, "is shorter than a day, the stream's default retention: a dead letter trimmed "
                           "while its record can still be re-read would be counted again",
                           f"set {name} to at least 86400 seconds")
    return value


def _port(name: str, raw: str) -> int:
    value = _positive_int(name, raw)
    if value > 65535:
        raise SettingError(name, raw, "is not a TCP port", f"set {name} to a port between 1 and 65535")
    return value


def _env_name(name: str, raw: str) -> str:
    if raw not in ("local", "prod"):
        raise SettingError(name, raw, "is not a known environment", f"set {name} to 'local' or 'prod'")
    return raw


def _redis_url(name: str, raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("redis", "rediss", "unix") or (parsed.scheme != "unix" and not parsed.hostname):
        raise SettingError(
            name, _redact_url(raw), "is not a Redis URL",
            f"set {name} like redis://host:6379/0 (or rediss:// for TLS), or unset it to let tally start one",
        )
    return raw


def _http_url(name: str, raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SettingError(name, raw, "is not an http(s) URL", f"set {name} like http://127.0.0.1:4566")
    return raw


def _identifier(name: str, raw: str) -> str:
    ok = raw and len(raw) <= 128 and all(c.isalnum() or c in "-_." for c in raw)
    if not ok:
        raise SettingError(
            name, raw, "is not a valid resource name",
            f"set {name} to 1-128 letters, digits, '-', '_' or '.'",
        )
    return raw


def _non_negative_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(name, raw, "is not a whole number", f"set {name} to 0 or a positive integer") from None
    if value < 0:
        raise SettingError(name, raw, "is negative", f"set {name} to 0 or a positive integer")
    return value


def _between(low: float, high: float, example: str) -> Callable[[str, str], float]:
    """A parser of a number between ``low`` and ``high`` (inclusive)."""

    def parse(name: str, raw: str) -> float:
        fix = f"set {name} to a fraction between {low:g} and {high:g}, e.g. {example}"
        try:
            value = float(raw)
        except ValueError:
            raise SettingError(name, raw, "is not a number", fix) from None
        if not low <= value <= high:
            raise SettingError(name, raw, f"is not between {low:g} and {high:g}", fix)
        return value

    return parse


_fraction = _between(0.0, 1.0, "0.001")
_scale = _between(0.01, 1.0, "0.05")


def _text(name: str, raw: str) -> str:
    if not raw:
        raise SettingError(name, raw, "is empty", f"set {name} to a non-empty value or unset it")
    return raw


def _snowflake_identifier(name: str, raw: str) -> str:
    """A Snowflake object name, optionally qualified (``DB.SCHEMA.NAME``): it is put into SQL text."""
    parts = raw.split(".")
    ok = 0 < len(parts) <= 3 and all(p and len(p) <= 255 and (p[0].isalpha() or p[0] == "_")
                                     and all(c.isalnum() or c in "_$" for c in p) for p in parts)
    if not ok:
        raise SettingError(
            name, raw, "is not a Snowflake object name",
            f"set {name} to letters, digits, '_' or '$' (starting with a letter or '_'), at most DB.SCHEMA.NAME",
        )
    return raw


def _snowflake_account(name: str, raw: str) -> str:
    if not raw or not all(c.isalnum() or c in "-_." for c in raw):
        raise SettingError(name, raw, "is not a Snowflake account identifier",
                           f"set {name} to your account identifier, e.g. myorg-myaccount")
    return raw


def _existing_file(name: str, raw: str) -> str:
    if not Path(raw).expanduser().is_file():
        raise SettingError(name, raw, "is not a readable file",
                           f"set {name} to the path of the PEM private key file of the Snowflake user")
    return str(Path(raw).expanduser())


def _existing_path(name: str, raw: str) -> str:
    if not Path(raw).expanduser().is_file():
        raise SettingError(name, raw, "is not a readable file", f"set {name} to the path of an existing file, or unset it")
    return str(Path(raw).expanduser())


def _protocol(name: str, raw: str) -> str:
    if raw not in ("https", "http"):
        raise SettingError(name, raw, "is not 'https' or 'http'", f"set {name} to https (http only for the emulator)")
    return raw


def _load_method(name: str, raw: str) -> str:
    if raw not in ("auto", "copy", "insert"):
        raise SettingError(name, raw, "is not a load method",
                           f"set {name} to 'copy' (COPY INTO from the external stage), 'insert' (the client reads "
                           "S3 and inserts) or 'auto' (copy when TALLY_SNOWFLAKE_STAGE is set)")
    return raw


def _fsync_policy(name: str, raw: str) -> str:
    if raw not in ("always", "none"):
        raise SettingError(name, raw, "is not an fsync policy",
                           f"set {name} to 'always' (acknowledge after the spool is fsynced: survives a power loss) "
                           "or 'none' (after the write reaches the OS: survives the collector dying, not the machine)")
    return raw


def _host(name: str, raw: str) -> str:
    ok = raw and len(raw) <= 253 and all(c.isalnum() or c in "-.:" for c in raw)
    if not ok:
        raise SettingError(name, raw, "is not a host name or IP address",
                           f"set {name} to an address to listen on, e.g. 127.0.0.1 (loopback) or 0.0.0.0 (every interface)")
    return raw


def _sla_seconds(name: str, raw: str) -> int:
    value = _positive_int(name, raw)
    if value < 60:
        raise SettingError(name, raw, "is under a minute (Dagster's freshness windows are at least 60 s)",
                           f"set {name} to 60 seconds or more")
    return value


def _log_format(name: str, raw: str) -> str:
    if raw not in ("json", "text"):
        raise SettingError(name, raw, "is not a log format",
                           f"set {name} to 'json' (one JSON object a line) or 'text', or unset it (json when stderr "
                           "is not a terminal)")
    return raw


def _metrics_port(name: str, raw: str) -> int | None:
    """A port, 0 (a free port, logged) or ``off`` (None: no endpoint)."""
    if raw == "off":
        return None
    if raw == "0":
        return 0
    try:
        return _port(name, raw)
    except SettingError:
        raise SettingError(name, raw, "is not a port, 0 or off",
                           f"set {name} to a free TCP port, 0 (any free port, logged) or off") from None


def _alert_urls(name: str, raw: str) -> tuple[str, ...]:
    """Apprise URLs separated by spaces, new lines or commas; each must name a service apprise knows.
    The values are secrets (tokens, passwords): a wrong one is named by its position and scheme only."""
    import re

    urls = tuple(u for u in re.split(r"[\s,]+(?=[A-Za-z][A-Za-z0-9+.-]*://)|\s+", raw.strip()) if u)
    if not urls:
        raise SettingError(name, None, "is empty", f"set {name} to one or more apprise URLs, or unset it")
    from apprise import Apprise

    for i, url in enumerate(urls, 1):
        if Apprise.instantiate(url) is None:
            scheme = url.split("://", 1)[0] if "://" in url else "?"
            raise SettingError(name, f"<URL {i} of {len(urls)}, scheme {scheme}://…>",
                               "is not an apprise URL tally can send to",
                               f"check URL {i} of {name} against apprise's list of services (e.g. "
                               "slack://…, mailto://…, pagerduty://…, json://host/path)")
    return urls


def _redact_url(url: str) -> str:
    """Hide a password in a URL before it goes into a message or a log."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


SETTINGS: tuple[Setting, ...] = (
    Setting("TALLY_ENV", "local", "`local` (embedded emulator, local Redis, DuckDB) or `prod` (AWS, Redis URL, Snowflake)", _env_name),
    Setting("TALLY_HOME", ".tally", "directory for local state: pid files, ports, logs, DuckDB file, reports", _text),
    Setting("TALLY_REDIS_URL", None, "Redis or Redis Cluster URL; unset locally = tally starts a redis-server on a free loopback port", _redis_url),
    Setting("TALLY_AWS_ENDPOINT_URL", None, "AWS endpoint override; unset locally = the emulator `tally stack up` started; unset in prod = real AWS", _http_url),
    Setting("TALLY_AWS_ENDPOINT_URL_KINESIS", None, "Kinesis only: endpoint override (beats `AWS_ENDPOINT_URL_KINESIS`, which beats `TALLY_AWS_ENDPOINT_URL`, then `AWS_ENDPOINT_URL`)", _http_url),
    Setting("TALLY_AWS_ENDPOINT_URL_S3", None, "S3 only: endpoint override (same order, with `AWS_ENDPOINT_URL_S3`)", _http_url),
    Setting("TALLY_AWS_ENDPOINT_URL_DYNAMODB", None, "DynamoDB only: endpoint override (same order, with `AWS_ENDPOINT_URL_DYNAMODB`)", _http_url),
    Setting("TALLY_AWS_REGION", "us-east-1", "AWS region for Kinesis, S3 and DynamoDB", _identifier),
    Setting("TALLY_EMULATOR_PORT", None, "loopback port for the AWS emulator; unset = a free port", _port),
    Setting("TALLY_EMULATOR_RETENTION_S", "86400", "the emulator trims stream records older than this (seconds), like Kinesis retention", _positive_int),
    Setting("TALLY_EMULATOR_MAX_RECORDS_PER_SHARD", "2000000", "the emulator trims each shard to at most this many records, bounding its memory", _positive_int),
    Setting("TALLY_STREAM_NAME", "tally-events", "Kinesis stream the SDK collectors write to", _identifier),
    Setting("TALLY_STREAM_SHARDS", "4", "shard count used when tally creates the stream locally", _positive_int),
    Setting("TALLY_BUCKET", "tally-archive", "S3 bucket of the raw archive (`raw/events/...`)", _identifier),
    Setting("TALLY_LEASE_TABLE", "tally-leases", "DynamoDB table holding shard leases and checkpoints", _identifier),
    Setting("TALLY_MAX_EVENT_BYTES", "65536", "largest accepted event record in bytes (Kinesis allows 1 MiB); bigger ones are dead-lettered as `oversized`", _positive_int),
    Setting("TALLY_MAX_FUTURE_SKEW_S", "300", "a `received_at` further than this in the future is dead-lettered as `future_received_at`", _positive_int),
    Setting("TALLY_DEDUP_HORIZON_S", "86400", "a repeated `event_id` inside this many seconds is counted once by the speed layer", _positive_int),
    Setting("TALLY_ALLOWED_LATENESS_S", "300", "how late an event may arrive before its minute window is closed and judged", _positive_int),
    Setting("TALLY_DUCKDB_PATH", None, "DuckDB warehouse file; unset = `$TALLY_HOME/warehouse.duckdb`", _text),
    Setting("TALLY_ARCHIVE_MAX_RECORDS", "20000", "the archiver commits a shard batch once it holds this many records", _positive_int),
    Setting("TALLY_ARCHIVE_MAX_BYTES", "16777216", "... or this many record bytes", _positive_int),
    Setting("TALLY_ARCHIVE_FLUSH_S", "30", "... or when its oldest record has waited this many seconds", _positive_int),
    Setting("TALLY_SPEED_TTL_MINUTE_S", "172800", "speed layer: minute counters live this long after their last write (seconds)", _positive_int),
    Setting("TALLY_SPEED_TTL_HOUR_S", "1209600", "speed layer: hour counters and hourly top pages live this long after their last write (seconds)", _positive_int),
    Setting("TALLY_RECONCILE_TOLERANCE_ABS", "0", "reconciliation: a cell whose layers differ by at most this many events is ok (0 = exact)", _non_negative_int),
    Setting("TALLY_RECONCILE_TOLERANCE_REL", "0", "reconciliation: ... or by at most this fraction of the expected count (0 = exact)", _fraction),
    Setting("TALLY_DEMO_SCALE", "1", "`make demo`'s size: 1 = three hours of history for 50 tenants and a live minute; 0.05 = a few minutes of each (the test of the demo's happy path)", _scale),
    Setting("TALLY_RECONCILE_MAX_STREAM_READ", "2000000", "reconciliation reads at most this many stream records (all shards) after the lagging layer's position; past it, every cell where that layer has less is held pending", _positive_int),
    Setting("TALLY_SPEED_TTL_DAY_S", "7776000", "speed layer: day counters, daily top pages, hourly uniques (days are their unions) and segment membership sets live this long", _positive_int),
    Setting("TALLY_SPEED_SEGMENT_HISTORY_S", "86400", "speed layer: a segment member whose membership ended more than this long before the newest hit of its rule is removed (live `at` queries reach back this far; older membership is in `fct_segment_memberships`)", _positive_int),
    Setting("TALLY_DEAD_LETTER_TTL_S", "604800", "speed layer: a dead letter (raw bytes, reason, position) is kept in Redis this long after it is written, its tenant's counts per reason this long after its newest (at least 86400: the stream's retention, so a re-read never counts one twice); the archive keeps every rejected record for good", _dead_letter_ttl),
    Setting("TALLY_PRIVACY_SALT", None, "secret key of the subject hashes in the suppression list and the deletion audit log (HMAC-SHA256); unset = plain SHA-256. Same value for every process; never logged", _text),
    Setting("TALLY_COLLECTOR_HOST", "127.0.0.1", "collector: address it listens on (loopback by default; 0.0.0.0 behind a load balancer)", _host),
    Setting("TALLY_COLLECTOR_PORT", None, "collector: port; unset = 8088 for `tally collect`, a free port for `tally stack up`", _port),
    Setting("TALLY_COLLECTOR_STATE_DIR", None, "collector: its state directory (instance id, write-ahead spool, key cache); unset = `$TALLY_HOME/collector`. One per collector process", _text),
    Setting("TALLY_COLLECTOR_SPOOL_MAX_BYTES", "268435456", "collector: the spool's bound in bytes; a request that would pass it gets 503 with Retry-After", _positive_int),
    Setting("TALLY_COLLECTOR_MAX_BATCH_BYTES", "512000", "collector: largest `/v1/batch` body (Segment's 500 KB), after gunzip; larger = 413", _positive_int),
    Setting("TALLY_COLLECTOR_MAX_MESSAGE_BYTES", "32768", "collector: largest message (Segment's 32 KB): a bigger single-message body = 413, a bigger message in a batch is dead-lettered `oversized`", _positive_int),
    Setting("TALLY_COLLECTOR_FSYNC", "always", "collector: `always` = a 200 waits for the spool's fsync (group commit); `none` = for the write to reach the OS only (survives the process dying, not a power loss)", _fsync_policy),
    Setting("TALLY_COLLECTOR_RETRY_AFTER_S", "5", "collector: the Retry-After (seconds) of a 503 when the spool is full", _positive_int),
    Setting("TALLY_COLLECTOR_EVENT_MAP", None, "collector: YAML file naming, per tenant, the `track` events that are `click` or `form_submit` (README: the collector)", _existing_path),
    Setting("TALLY_WRITE_KEY_TABLE", "tally-write-keys", "DynamoDB table of the collectors' write keys (hashed); each collector caches it in its state directory", _identifier),
    Setting("TALLY_COLLECTOR_KEYS_REFRESH_S", "10", "collector: re-reads the write-key table this often (seconds); a new or revoked key takes effect within it", _positive_int),
    Setting("TALLY_COLLECTOR_FORWARD_URL", None, "collector: the legacy collector's base URL (`http(s)://host:port`); set = every request the collector accepts is copied, unchanged (path, body bytes, content type and encoding, Authorization), to this URL from a durable forward spool, asynchronously (README: migrating from an existing pipeline)", _http_url),
    Setting("TALLY_COLLECTOR_FORWARD_MAX_BYTES", "268435456", "collector: the forward spool's bound in bytes; past it a request is still acknowledged (tally has it) but not forwarded, and counted in `tally_collector_forward_dropped_total`", _positive_int),
    Setting("TALLY_COLLECTOR_FORWARD_MAX_BACKOFF_S", "30", "collector: the longest wait (seconds) between two attempts to forward a request to a legacy collector that is down or answers 5xx/429 (exponential from 0.25 s)", _positive_int),
    Setting("TALLY_COLLECTOR_FORWARD_TIMEOUT_S", "10", "collector: how long one forward attempt waits for the legacy collector to answer (seconds)", _positive_int),
    Setting("TALLY_MIGRATION_CONFIG", None, "`tally migrate`: YAML or TOML file naming the legacy pipeline's counts (a PostgreSQL DSN + SQL query, or CSV/Parquet exports in S3) and the tenant and event-type name mappings (README: migrating from an existing pipeline)", _existing_path),
    Setting("TALLY_MIGRATION_TOLERANCE", "0.005", "`tally migrate`: a cell where legacy and tally differ by at most this fraction of tally's count is ok; beyond it `legacy_missing` or `legacy_extra`", _fraction),
    Setting("TALLY_MIGRATION_READY_DAYS", "14", "`tally migrate`: consecutive days where tally's own layers reconcile and every deviation is explained as legacy loss before the cutover verdict is `ready`", _positive_int),
    Setting("TALLY_PLAN_PRICES", None, "`tally plan`: JSON file of prices replacing those of its dated table (`streaming/plan/prices.json`); `--prices` wins", _text),
    Setting("TALLY_LOG_FORMAT", None, "`json` (one JSON object a line: `ts`, `level`, `component`, `logger`, `message` and fields such as `shard`, `group`, `records`, `duration_s`) or `text`; unset = json when stderr is not a terminal", _log_format),
    Setting("TALLY_METRICS_HOST", "127.0.0.1", "address a long-running process serves its Prometheus `/metrics` on (loopback by default; `0.0.0.0` for a Prometheus on another host)", _text),
    Setting("TALLY_METRICS_PORT", None, "this process's `/metrics` port; unset = the component's default (speed consumer 9464, archiver 9465, collector 9466; the query API serves `/metrics` on its own port), 0 = a free port (logged), `off` = none", _metrics_port),
    Setting("TALLY_ALERT_URLS", None, "where tally's own alerts go: apprise URLs (`slack://…`, `mailto://…`, `pagerduty://…`, `json://host/path`…) separated by spaces; unset = alerts are only logged. Secret (tokens, passwords): never logged or printed", _alert_urls),
    Setting("TALLY_FRESHNESS_STREAM_S", "900", "freshness SLA of the stream: stale (and one alert) when no record has arrived for this many seconds", _sla_seconds),
    Setting("TALLY_FRESHNESS_SPEED_S", "120", "freshness SLA of the speed layer: stale when its position clock is further behind than this (seconds)", _sla_seconds),
    Setting("TALLY_FRESHNESS_ARCHIVE_S", "600", "freshness SLA of the archive: stale when its position clock is further behind than this (seconds)", _sla_seconds),
    Setting("TALLY_FRESHNESS_WAREHOUSE_S", "7200", "freshness SLA of `raw_events` and the marts: stale when no build has materialized them for this many seconds", _sla_seconds),
    Setting("TALLY_SNOWFLAKE_ACCOUNT", None, "prod: Snowflake account identifier (`myorg-myaccount`); required when TALLY_ENV=prod", _snowflake_account),
    Setting("TALLY_SNOWFLAKE_USER", None, "prod: Snowflake user tally connects as; required when TALLY_ENV=prod", _text),
    Setting("TALLY_SNOWFLAKE_PASSWORD", None, "prod: that user's password (secret; never logged) — or use a key pair", _text),
    Setting("TALLY_SNOWFLAKE_PRIVATE_KEY_PATH", None, "prod: PEM private key file for key-pair authentication (instead of a password)", _existing_file),
    Setting("TALLY_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", None, "prod: passphrase of an encrypted private key (secret; never logged)", _text),
    Setting("TALLY_SNOWFLAKE_ROLE", None, "prod: role tally uses (needs the grants in README \"Going to production\"); required when TALLY_ENV=prod", _snowflake_identifier),
    Setting("TALLY_SNOWFLAKE_WAREHOUSE", None, "prod: virtual warehouse for loads, dbt and reconciliation; required when TALLY_ENV=prod", _snowflake_identifier),
    Setting("TALLY_SNOWFLAKE_DATABASE", "TALLY", "prod: database holding the `RAW`, staging, intermediate, marts and reference schemas", _snowflake_identifier),
    Setting("TALLY_SNOWFLAKE_SCHEMA", "ANALYTICS", "prod: default schema of the connection and of dbt's target", _snowflake_identifier),
    Setting("TALLY_SNOWFLAKE_STAGE", None, "prod: external stage on `s3://$TALLY_BUCKET/raw/events/` (e.g. `RAW.TALLY_ARCHIVE`); set = raw events load by COPY INTO", _snowflake_identifier),
    Setting("TALLY_SNOWFLAKE_STORAGE_INTEGRATION", None, "prod: storage integration `tally snowflake` uses to create that stage (optional; an admin may create it)", _snowflake_identifier),
    Setting("TALLY_SNOWFLAKE_LOAD_METHOD", "auto", "`copy` (external stage + COPY INTO), `insert` (tally reads S3, inserts in batches: no S3 access from Snowflake) or `auto`", _load_method),
    Setting("TALLY_SNOWFLAKE_HOST", None, "Snowflake host override (the emulator's `127.0.0.1`, or a private-link host); unset = from the account", _text),
    Setting("TALLY_SNOWFLAKE_PORT", None, "Snowflake port override (the emulator's port)", _port),
    Setting("TALLY_SNOWFLAKE_PROTOCOL", "https", "`https`; `http` only for the emulator on loopback", _protocol),
)

_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

#: The AWS services tally uses, by the identifiers the AWS SDKs use in ``AWS_ENDPOINT_URL_<SERVICE>``.
AWS_SERVICES: tuple[str, ...] = ("kinesis", "s3", "dynamodb")


@dataclass(frozen=True)
class EndpointSetting:
    """An AWS endpoint given by a variable: its URL and the variable that set it (for messages)."""

    url: str
    variable: str


def endpoint_variables(service: str) -> tuple[str, ...]:
    """The variables that can set ``service``'s endpoint, first wins.

    The AWS SDKs' order is: ``endpoint_url=`` passed to the client, then ``AWS_ENDPOINT_URL_<SERVICE>``,
    then ``AWS_ENDPOINT_URL``, then the shared config file. tally passes ``endpoint_url=`` itself (which
    would hide the SDK variables), so it reads them here in the SDKs' order: a service's own variable
    beats a global one, and at each level tally's own variable beats the SDK's.
    """
    upper = service.upper()
    return (f"TALLY_AWS_ENDPOINT_URL_{upper}", f"AWS_ENDPOINT_URL_{upper}", "TALLY_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL")


def _aws_endpoints(env: Mapping[str, str]) -> dict[str, EndpointSetting]:
    """Each service's endpoint set by a variable (absent: the emulator locally, AWS's default in prod);
    ``"*"`` is the global one (``TALLY_AWS_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL``).
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` makes the SDK variables count for nothing, as in the SDKs."""
    ignore_sdk = env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true"
    out: dict[str, EndpointSetting] = {}
    for service in (*AWS_SERVICES, "*"):
        variables = endpoint_variables(service)[2:] if service == "*" else endpoint_variables(service)
        for variable in variables:
            if ignore_sdk and variable.startswith("AWS_"):
                continue
            raw = env.get(variable)
            if raw:
                out[service] = EndpointSetting(_http_url(variable, raw), variable)
                break
    return out

#: Settings whose values are secrets: never in a repr, a log line, an error message or Dagster metadata.
SECRET_SETTINGS = frozenset({"TALLY_SNOWFLAKE_PASSWORD", "TALLY_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "TALLY_PRIVACY_SALT",
                             "TALLY_ALERT_URLS"})


@dataclass(frozen=True, repr=False)
class SnowflakeSettings:
    """The Snowflake connection and load settings. Its repr shows which secrets are set, never their values."""

    account: str | None = None
    user: str | None = None
    password: str | None = None
    private_key_path: str | None = None
    private_key_passphrase: str | None = None
    role: str | None = None
    warehouse: str | None = None
    database: str = "TALLY"
    schema: str = "ANALYTICS"
    stage: str | None = None
    storage_integration: str | None = None
    load_method: str = "auto"
    host: str | None = None
    port: int | None = None
    protocol: str = "https"

    @property
    def effective_load_method(self) -> str:
        if self.load_method == "auto":
            return "copy" if self.stage else "insert"
        return self.load_method

    def __repr__(self) -> str:
        shown = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in ("password", "private_key_passphrase") and value is not None:
                value = "***"
            shown.append(f"{name}={value!r}")
        return f"SnowflakeSettings({', '.join(shown)})"

    __str__ = __repr__


def _snowflake_settings(env: Mapping[str, str]) -> SnowflakeSettings:
    return SnowflakeSettings(
        account=_get(env, "TALLY_SNOWFLAKE_ACCOUNT"),
        user=_get(env, "TALLY_SNOWFLAKE_USER"),
        password=_get(env, "TALLY_SNOWFLAKE_PASSWORD"),
        private_key_path=_get(env, "TALLY_SNOWFLAKE_PRIVATE_KEY_PATH"),
        private_key_passphrase=_get(env, "TALLY_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"),
        role=_get(env, "TALLY_SNOWFLAKE_ROLE"),
        warehouse=_get(env, "TALLY_SNOWFLAKE_WAREHOUSE"),
        database=_get(env, "TALLY_SNOWFLAKE_DATABASE"),
        schema=_get(env, "TALLY_SNOWFLAKE_SCHEMA"),
        stage=_get(env, "TALLY_SNOWFLAKE_STAGE"),
        storage_integration=_get(env, "TALLY_SNOWFLAKE_STORAGE_INTEGRATION"),
        load_method=_get(env, "TALLY_SNOWFLAKE_LOAD_METHOD"),
        host=_get(env, "TALLY_SNOWFLAKE_HOST"),
        port=_get(env, "TALLY_SNOWFLAKE_PORT"),
        protocol=_get(env, "TALLY_SNOWFLAKE_PROTOCOL"),
    )


def require_snowflake(settings: Settings) -> SnowflakeSettings:
    """The Snowflake settings, complete enough to connect and load; else a SettingError naming the gap.

    Called where the warehouse is Snowflake (the Dagster definitions when TALLY_ENV=prod, the loader),
    not by :func:`load_settings`: a speed-layer Lambda in prod needs no Snowflake settings.
    """
    sf = settings.snowflake
    required = [("TALLY_SNOWFLAKE_ACCOUNT", sf.account, "your account identifier, e.g. myorg-myaccount"),
                ("TALLY_SNOWFLAKE_USER", sf.user, "the Snowflake user tally connects as"),
                ("TALLY_SNOWFLAKE_ROLE", sf.role, "the role granted tally's privileges (README: Going to production)"),
                ("TALLY_SNOWFLAKE_WAREHOUSE", sf.warehouse, "the virtual warehouse tally runs queries on")]
    for name, value, what in required:
        if not value:
            raise SettingError(name, None, "is required when the warehouse is Snowflake (TALLY_ENV=prod)",
                               f"set {name} to {what}")
    if not sf.password and not sf.private_key_path:
        raise SettingError("TALLY_SNOWFLAKE_PASSWORD", None,
                           "is required when the warehouse is Snowflake and no key pair is configured",
                           "set TALLY_SNOWFLAKE_PASSWORD, or TALLY_SNOWFLAKE_PRIVATE_KEY_PATH to a PEM private key file")
    if sf.load_method == "copy" and not sf.stage:
        raise SettingError("TALLY_SNOWFLAKE_STAGE", None, "is required when TALLY_SNOWFLAKE_LOAD_METHOD=copy",
                           "set TALLY_SNOWFLAKE_STAGE to the external stage on s3://<TALLY_BUCKET>/raw/events/ (e.g. RAW.TALLY_ARCHIVE), "
                           "or TALLY_SNOWFLAKE_LOAD_METHOD=insert")
    return sf


@dataclass(frozen=True)
class CollectorSettings:
    """The collector's settings (``TALLY_COLLECTOR_*`` and the write-key table)."""

    host: str = "127.0.0.1"
    port: int | None = None
    state_dir: Path = Path(".tally/collector")
    spool_max_bytes: int = 268_435_456
    max_batch_bytes: int = 512_000
    max_message_bytes: int = 32_768
    fsync: str = "always"
    retry_after_s: int = 5
    event_map: str | None = None
    write_key_table: str = "tally-write-keys"
    keys_refresh_s: int = 10
    forward_url: str | None = None
    forward_max_bytes: int = 268_435_456
    forward_max_backoff_s: int = 30
    forward_timeout_s: int = 10


def _collector_settings(env: Mapping[str, str], home: Path) -> CollectorSettings:
    state_dir = _get(env, "TALLY_COLLECTOR_STATE_DIR")
    collector = CollectorSettings(
        host=_get(env, "TALLY_COLLECTOR_HOST"),
        port=_get(env, "TALLY_COLLECTOR_PORT"),
        state_dir=Path(state_dir).expanduser() if state_dir else home / "collector",
        spool_max_bytes=_get(env, "TALLY_COLLECTOR_SPOOL_MAX_BYTES"),
        max_batch_bytes=_get(env, "TALLY_COLLECTOR_MAX_BATCH_BYTES"),
        max_message_bytes=_get(env, "TALLY_COLLECTOR_MAX_MESSAGE_BYTES"),
        fsync=_get(env, "TALLY_COLLECTOR_FSYNC"),
        retry_after_s=_get(env, "TALLY_COLLECTOR_RETRY_AFTER_S"),
        event_map=_get(env, "TALLY_COLLECTOR_EVENT_MAP"),
        write_key_table=_get(env, "TALLY_WRITE_KEY_TABLE"),
        keys_refresh_s=_get(env, "TALLY_COLLECTOR_KEYS_REFRESH_S"),
        forward_url=_get(env, "TALLY_COLLECTOR_FORWARD_URL"),
        forward_max_bytes=_get(env, "TALLY_COLLECTOR_FORWARD_MAX_BYTES"),
        forward_max_backoff_s=_get(env, "TALLY_COLLECTOR_FORWARD_MAX_BACKOFF_S"),
        forward_timeout_s=_get(env, "TALLY_COLLECTOR_FORWARD_TIMEOUT_S"),
    )
    if collector.max_message_bytes > collector.max_batch_bytes:
        raise SettingError("TALLY_COLLECTOR_MAX_MESSAGE_BYTES", env.get("TALLY_COLLECTOR_MAX_MESSAGE_BYTES"),
                           f"is larger than TALLY_COLLECTOR_MAX_BATCH_BYTES ({collector.max_batch_bytes})",
                           "set TALLY_COLLECTOR_MAX_MESSAGE_BYTES to at most the batch limit")
    if collector.max_batch_bytes > 1_000_000:
        raise SettingError("TALLY_COLLECTOR_MAX_BATCH_BYTES", env.get("TALLY_COLLECTOR_MAX_BATCH_BYTES"),
                           "is above what one message may be and still fit a Kinesis record as a dead letter (1 MiB)",
                           "set TALLY_COLLECTOR_MAX_BATCH_BYTES to at most 1000000")
    if collector.spool_max_bytes < 4 * collector.max_batch_bytes:
        raise SettingError("TALLY_COLLECTOR_SPOOL_MAX_BYTES", env.get("TALLY_COLLECTOR_SPOOL_MAX_BYTES"),
                           f"is smaller than four batches ({4 * collector.max_batch_bytes} bytes)",
                           "set TALLY_COLLECTOR_SPOOL_MAX_BYTES to at least four times TALLY_COLLECTOR_MAX_BATCH_BYTES "
                           "(the spool holds what Kinesis has not taken yet: size it for the outage it must ride out)")
    return collector


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with :func:`load_settings`."""

    env: str
    home: Path
    redis_url: str | None
    aws_endpoint_url: str | None
    aws_region: str
    emulator_port: int | None
    emulator_retention_s: int
    emulator_max_records_per_shard: int
    stream_name: str
    stream_shards: int
    bucket: str
    lease_table: str
    max_event_bytes: int
    max_future_skew_s: int
    dedup_horizon_s: int
    allowed_lateness_s: int
    duckdb_path: Path
    archive_max_records: int = 20_000
    archive_max_bytes: int = 16_777_216
    archive_flush_s: int = 30
    speed_ttl_minute_s: int = 172_800
    speed_ttl_hour_s: int = 1_209_600
    speed_ttl_day_s: int = 7_776_000
    speed_segment_history_s: int = 86_400
    dead_letter_ttl_s: int = 604_800
    reconcile_tolerance_abs: int = 0
    reconcile_tolerance_rel: float = 0.0
    reconcile_max_stream_read: int = 2_000_000
    demo_scale: float = 1.0
    snowflake: SnowflakeSettings = field(default_factory=SnowflakeSettings)
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    privacy_salt: str = field(default="", repr=False)
    log_format: str | None = None
    metrics_host: str = "127.0.0.1"
    #: None = the component's default port (the variable unset); see :func:`metrics_port`.
    metrics_port: int | None = None
    metrics_off: bool = False
    alert_urls: tuple[str, ...] = field(default=(), repr=False)
    freshness_stream_s: int = 900
    freshness_speed_s: int = 120
    freshness_archive_s: int = 600
    freshness_warehouse_s: int = 7200
    migration_config: str | None = None
    migration_tolerance: float = 0.005
    migration_ready_days: int = 14
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    #: Per AWS service, the endpoint a variable sets (see :func:`endpoint_variables`).
    aws_endpoints: Mapping[str, EndpointSetting] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.env == "local"


def _get(env: Mapping[str, str], name: str) -> Any:
    setting = _BY_NAME[name]
    raw = env.get(name)
    if raw is None or raw == "":
        raw = setting.default
    if raw is None:
        return None
    return setting.parse(name, raw)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting from ``env`` (default: the process environment)."""
    env = dict(os.environ if env is None else env)
    home = Path(_get(env, "TALLY_HOME")).expanduser()
    duckdb = _get(env, "TALLY_DUCKDB_PATH")
    max_event_bytes = _get(env, "TALLY_MAX_EVENT_BYTES")
    if max_event_bytes > 1_000_000:
        raise SettingError(
            "TALLY_MAX_EVENT_BYTES", env.get("TALLY_MAX_EVENT_BYTES"),
            "is above what one Kinesis record can carry (1 MiB with its partition key)",
            "set TALLY_MAX_EVENT_BYTES to at most 1000000",
        )
    settings = Settings(
        env=_get(env, "TALLY_ENV"),
        home=home,
        redis_url=_get(env, "TALLY_REDIS_URL"),
        aws_endpoint_url=_get(env, "TALLY_AWS_ENDPOINT_URL"),
        aws_region=_get(env, "TALLY_AWS_REGION"),
        emulator_port=_get(env, "TALLY_EMULATOR_PORT"),
        emulator_retention_s=_get(env, "TALLY_EMULATOR_RETENTION_S"),
        emulator_max_records_per_shard=_get(env, "TALLY_EMULATOR_MAX_RECORDS_PER_SHARD"),
        stream_name=_get(env, "TALLY_STREAM_NAME"),
        stream_shards=_get(env, "TALLY_STREAM_SHARDS"),
        bucket=_get(env, "TALLY_BUCKET"),
        lease_table=_get(env, "TALLY_LEASE_TABLE"),
        max_event_bytes=max_event_bytes,
        max_future_skew_s=_get(env, "TALLY_MAX_FUTURE_SKEW_S"),
        dedup_horizon_s=_get(env, "TALLY_DEDUP_HORIZON_S"),
        allowed_lateness_s=_get(env, "TALLY_ALLOWED_LATENESS_S"),
        duckdb_path=Path(duckdb).expanduser() if duckdb else home / "warehouse.duckdb",
        archive_max_records=_get(env, "TALLY_ARCHIVE_MAX_RECORDS"),
        archive_max_bytes=_get(env, "TALLY_ARCHIVE_MAX_BYTES"),
        archive_flush_s=_get(env, "TALLY_ARCHIVE_FLUSH_S"),
        speed_ttl_minute_s=_get(env, "TALLY_SPEED_TTL_MINUTE_S"),
        speed_ttl_hour_s=_get(env, "TALLY_SPEED_TTL_HOUR_S"),
        speed_ttl_day_s=_get(env, "TALLY_SPEED_TTL_DAY_S"),
        speed_segment_history_s=_get(env, "TALLY_SPEED_SEGMENT_HISTORY_S"),
        dead_letter_ttl_s=_get(env, "TALLY_DEAD_LETTER_TTL_S"),
        reconcile_tolerance_abs=_get(env, "TALLY_RECONCILE_TOLERANCE_ABS"),
        reconcile_tolerance_rel=_get(env, "TALLY_RECONCILE_TOLERANCE_REL"),
        reconcile_max_stream_read=_get(env, "TALLY_RECONCILE_MAX_STREAM_READ"),
        demo_scale=_get(env, "TALLY_DEMO_SCALE"),
        snowflake=_snowflake_settings(env),
        collector=_collector_settings(env, home),
        privacy_salt=_get(env, "TALLY_PRIVACY_SALT") or "",
        log_format=_get(env, "TALLY_LOG_FORMAT"),
        metrics_host=_get(env, "TALLY_METRICS_HOST"),
        metrics_port=_get(env, "TALLY_METRICS_PORT"),
        metrics_off=env.get("TALLY_METRICS_PORT") == "off",
        alert_urls=_get(env, "TALLY_ALERT_URLS") or (),
        freshness_stream_s=_get(env, "TALLY_FRESHNESS_STREAM_S"),
        freshness_speed_s=_get(env, "TALLY_FRESHNESS_SPEED_S"),
        freshness_archive_s=_get(env, "TALLY_FRESHNESS_ARCHIVE_S"),
        freshness_warehouse_s=_get(env, "TALLY_FRESHNESS_WAREHOUSE_S"),
        migration_config=_get(env, "TALLY_MIGRATION_CONFIG"),
        migration_tolerance=_get(env, "TALLY_MIGRATION_TOLERANCE"),
        migration_ready_days=_get(env, "TALLY_MIGRATION_READY_DAYS"),
        raw={k: v for k, v in env.items() if k.startswith("TALLY_") and k not in SECRET_SETTINGS},
        aws_endpoints=_aws_endpoints(env),
    )
    if settings.env == "prod" and settings.redis_url is None:
        raise SettingError(
            "TALLY_REDIS_URL", None, "is required when TALLY_ENV=prod",
            "set TALLY_REDIS_URL to your Redis or Redis Cluster URL (redis://host:6379/0)",
        )
    return settings


def redact_url(url: str) -> str:
    """Public form of :func:`_redact_url` for logs and status output."""
    return _redact_url(url)


def settings_table() -> str:
    """The settings as a Markdown table (the README's table is this output)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        rows.append(f"| `{s.name}` | {'`' + s.default + '`' if s.default else '—'} | {s.meaning} |")
    return "\n".join(rows)
