"""What tally says, and does, when a service it needs is down, missing or refuses it.

One vocabulary, two behaviours:

- A command that does one job (``tally query``, ``reconcile``, ``archive`` until caught up, ...) stops
  with one sentence that names the service, the setting and the fix, and exits 2
  (:func:`explain`, :func:`exit_on_user_error`). No traceback: the sentence is the whole message.
- A long-running consumer (``tally consume``, ``tally archive --follow``, ``python -m
  streaming.speed.run``) waits instead (:func:`keep_running`): it logs the same sentence with its next
  retry and tries again with exponential backoff, at start-up as after an outage mid-run. Such a
  process runs under a supervisor (systemd, Kubernetes, the demo) next to services that may start in
  any order; exiting would only turn a late Redis into a crash loop. A wrong *setting* (a bad URL, a
  stack that was never started) cannot fix itself, so it still exits 2 at once.

An error tally cannot explain (a bug) keeps its traceback: hiding it would make it harder to report.
"""

from __future__ import annotations

import errno
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis

from streaming.endpoints import Endpoints, StackNotRunning, from_variables
from streaming.literal import printable
from streaming.settings import SettingError, Settings, redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Where the endpoints of ``settings`` came from (for the sentence's "(<the setting>)").
Locate = Callable[[Settings], Endpoints]

#: Errors that mean "Redis is not reachable or not ready right now": wait and retry, never skip.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError, redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
)

SERVICE_NAMES = {"kinesis": "Kinesis", "s3": "S3", "dynamodb": "DynamoDB"}
EXIT_USER_ERROR = 2

_CREDENTIAL_CODES = frozenset({
    "UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException", "AccessDenied", "AccessDeniedException", "InvalidSignatureException",
})
_BUSY_CODES = frozenset({
    "ThrottlingException", "ProvisionedThroughputExceededException", "LimitExceededException",
    "InternalServerError", "InternalFailure", "ServiceUnavailable", "RequestLimitExceeded", "SlowDown",
})


class UserError(Exception):
    """A problem the user can fix, already said in one sentence (with its fix)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def explain(exc: BaseException, settings: Settings | None = None, locate: Locate | None = None) -> str | None:
    """One sentence (naming the service, the setting and the fix) for an error the user can fix; None
    for anything else. The exception's causes are looked at too (a ProducerError from a ClientError).
    ``locate`` says where the endpoints came from (the CLI's: with the local stack's record); by
    default the settings' variables alone."""
    for error in _chain(exc):
        text = _explain_one(error, settings, locate or _from_variables)
        if text:
            return text
    return None


def is_outage(exc: BaseException) -> bool:
    """True for "the service is not answering right now": worth waiting for."""
    import botocore.exceptions as bce

    for error in _chain(exc):
        if isinstance(error, TRANSIENT_ERRORS) or isinstance(error, (bce.ConnectionError, bce.HTTPClientError)):
            return True
        if isinstance(error, bce.ClientError) and _code(error) in _BUSY_CODES:
            return True
        if _is_redis_cluster_unreachable(error):
            return True
    return False


def exit_on_user_error(fn: Callable[[], T], settings: Callable[[], Settings | None] | None = None,
                       locate: Locate | None = None) -> T:
    """Run ``fn``; an error with an explanation becomes ``tally: <sentence>`` on stderr and exit 2."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - only explained errors are caught; the rest re-raise
        sentence = explain(exc, _quiet(settings), locate)
        if sentence is None:
            raise
        print(f"tally: {printable(sentence)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None


def keep_running(run: Callable[[], T], stop: threading.Event, what: str, settings: Settings | None = None,
                 base_s: float = 0.5, max_s: float = 30.0, locate: Locate | None = None) -> T | None:
    """Call ``run`` until it returns; while a service is down (:func:`is_outage`), log the sentence and
    retry with exponential backoff (the backoff starts again after a run that lasted a minute). Returns
    None if ``stop`` is set while waiting. Any other error propagates."""
    attempt = 0
    while True:
        started = time.monotonic()
        try:
            return run()
        except Exception as exc:  # noqa: BLE001 - outages are waited for; everything else re-raises
            if not is_outage(exc):
                raise
            if time.monotonic() - started > 60:
                attempt = 0
            delay = min(max_s, base_s * 2 ** attempt)
            attempt += 1
            sentence = explain(exc, settings, locate) or f"{type(exc).__name__}: {exc}"
            log.warning("%s is waiting: %s Retrying in %.1f s (attempt %d).", what, printable(sentence), delay, attempt)
            if stop.wait(delay):
                return None


def _from_variables(settings: Settings) -> Endpoints:
    return from_variables(settings, require_running=False)


def _quiet(settings: Callable[[], Settings | None] | None) -> Settings | None:
    try:
        return settings() if settings is not None else _load()
    except Exception:  # noqa: BLE001 - explaining must not fail on the settings that caused the error
        return None


def _load() -> Settings | None:
    from streaming.settings import load_settings

    try:
        return load_settings()
    except SettingError:
        return None


def _code(error: Any) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _is_redis_cluster_unreachable(error: BaseException) -> bool:
    import redis

    return isinstance(error, redis.exceptions.RedisClusterException) and "connect" in str(error).lower()


def _explain_one(error: BaseException, settings: Settings | None, locate: Locate) -> str | None:
    import botocore.exceptions as bce
    import redis

    # A stack's own errors (e.g. no redis-server binary) are UserErrors: their text is the sentence.
    if isinstance(error, (SettingError, StackNotRunning, UserError)):
        return str(error)
    if isinstance(error, redis.AuthenticationError) or (
            isinstance(error, redis.ResponseError) and str(error).startswith(("NOAUTH", "WRONGPASS"))):
        url, source = _redis_where(settings, locate)
        return (f"Redis at {url} ({source}) refused tally: {error}. Fix: put the right user and password in "
                "TALLY_REDIS_URL (redis://user:password@host:6379/0)")
    if isinstance(error, TRANSIENT_ERRORS) or _is_redis_cluster_unreachable(error):
        url, source = _redis_where(settings, locate)
        return f"Redis at {url} ({source}) does not answer ({_first_line(error)}). Fix: {_redis_fix(source)}"
    if isinstance(error, (bce.ConnectionError, bce.HTTPClientError)):
        service, url, source = _aws_where(error, settings, locate)
        return (f"{service} at {url} ({source}) does not answer ({_first_line(error)}). "
                f"Fix: {_aws_fix(error, source)}")
    if isinstance(error, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        service, _, _ = _aws_where(error, settings, locate)
        return (f"no AWS credentials for {service} ({error}). Fix: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or run where an instance or task role is attached")
    if isinstance(error, bce.ClientError):
        return _client_error(error, settings)
    return _warehouse_or_dagster(error, settings)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")


def _redis_where(settings: Settings | None, locate: Locate) -> tuple[str, str]:
    if settings is None:
        return "the configured address", "TALLY_REDIS_URL or `tally stack up`"
    endpoints = locate(settings)
    url = redact_url(endpoints.redis) if endpoints.redis else "<none>"
    return url, endpoints.sources.get("redis", "TALLY_REDIS_URL")


def _redis_fix(source: str) -> str:
    if source == "TALLY_REDIS_URL":
        return ("start that Redis, or set TALLY_REDIS_URL to one that runs (unset it to use the Redis "
                "`tally stack up` starts)")
    return "run `tally stack up` (it starts tally's Redis again; its data stays under TALLY_HOME), or set TALLY_REDIS_URL"


def _aws_where(error: BaseException, settings: Settings | None, locate: Locate) -> tuple[str, str, str]:
    """(service name, endpoint, the setting it came from) for a failed AWS call."""
    service = getattr(error, "tally_service", "")
    url = _base(str(getattr(error, "kwargs", {}).get("endpoint_url") or ""))
    endpoints = None
    matching: list[str] = []
    if settings is not None:
        endpoints = locate(settings)
        if not service and url:
            matching = [s for s in SERVICE_NAMES if _base(endpoints.aws.get(s) or "") == url]
            service = matching[0] if len(matching) == 1 else ""
    if service:
        name = SERVICE_NAMES.get(service, service)
    elif matching:  # a client made elsewhere (Dagster's S3 resource): every service at that address
        names = [SERVICE_NAMES[s] for s in matching]
        name = "the AWS endpoint of " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])
    else:
        name = "the AWS endpoint"
    source = "an AWS endpoint setting"
    if endpoints is not None:
        source = endpoints.sources.get(service or (matching[0] if matching else "aws"), source)
        url = url or _base(endpoints.aws.get(service) or "") if service else url
    return name, redact_url(url) if url else "AWS", source


def _base(url: str) -> str:
    """scheme://host:port of an endpoint (a failed call's URL carries its path and query)."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}" if parsed.scheme and parsed.netloc else url.rstrip("/")


def _aws_fix(error: BaseException, source: str) -> str:
    if source.startswith("tally stack up"):
        return "run `tally stack up` (it starts the AWS emulator again; the emulator keeps nothing across restarts)"
    if source.startswith(("TALLY_", "AWS_")):
        return f"start the service at that address, or set {source} to an endpoint that answers (or unset it)"
    return ("check the network and TALLY_AWS_REGION, or point one service elsewhere with "
            "TALLY_AWS_ENDPOINT_URL_<SERVICE> / AWS_ENDPOINT_URL_<SERVICE>")


def _client_error(error: Any, settings: Settings | None) -> str | None:
    code = _code(error)
    service = getattr(error, "tally_service", "")
    name = SERVICE_NAMES.get(service, "AWS")
    message = error.response.get("Error", {}).get("Message", "")
    if code in _CREDENTIAL_CODES:
        return (f"{name} refused tally's credentials or permissions ({code}: {message}). Fix: check AWS_PROFILE "
                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and grant the IAM actions in the README's "
                "\"Going to production\"")
    missing = {
        ("kinesis", "ResourceNotFoundException"): ("Kinesis stream", "TALLY_STREAM_NAME", "stream_name"),
        ("dynamodb", "ResourceNotFoundException"): ("DynamoDB lease table", "TALLY_LEASE_TABLE", "lease_table"),
        ("s3", "NoSuchBucket"): ("S3 bucket", "TALLY_BUCKET", "bucket"),
    }.get((service, code))
    if missing is None and code == "NoSuchBucket":
        missing = ("S3 bucket", "TALLY_BUCKET", "bucket")
    if missing is not None:
        what, variable, attr = missing
        value = getattr(settings, attr, "") if settings is not None else ""
        return (f"the {what} {value!r} ({variable}) does not exist. Fix: run `tally stack up` (it creates the "
                f"stream, bucket and lease table), or set {variable} to an existing one")
    if code in _BUSY_CODES:
        return f"{name} is busy or failing ({code}: {message}); tally retried and gave up. Fix: try again later"
    return None


def _warehouse_or_dagster(error: BaseException, settings: Settings | None) -> str | None:
    text = str(error)
    module = type(error).__module__ or ""
    if "duckdb" in module:
        path = str(settings.duckdb_path) if settings is not None else "the DuckDB file"
        if "Could not set lock" in text or "Conflicting lock" in text:
            holder = text.split("Conflicting lock is held in", 1)[-1].split(". See", 1)[0].strip() if "held in" in text else ""
            return (f"the DuckDB warehouse {path} (TALLY_DUCKDB_PATH) is locked by another process"
                    + (f" ({holder})" if holder else "") + ": DuckDB allows one writer. Fix: wait for that "
                    "process (a batch build, dbt, the Dagster UI's run) to finish, or stop it")
        if "database does not exist" in text:
            return (f"the DuckDB warehouse {path} (TALLY_DUCKDB_PATH, default $TALLY_HOME/warehouse.duckdb) does "
                    "not exist yet. Fix: run `tally batch build` first, or set TALLY_DUCKDB_PATH to the warehouse file")
    if "DAGSTER_HOME" in text and ("not a directory" in text or "does not exist" in text or "not set" in text):
        return (f"Dagster's home is missing ({_first_line(error)}). Fix: create that directory (`make dagster-home`), "
                "or unset DAGSTER_HOME to use $TALLY_HOME/dagster_home")
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS) and error.filename:
        return (f"cannot write {error.filename} ({error.strerror}). Fix: free space or fix the permissions there, "
                "or set TALLY_HOME to a writable directory")
    return None
