"""`tally stack up | down | status`: the embedded default's services, on loopback, with state in TALLY_HOME.

``up`` is idempotent (a live component recorded in ``stack.json`` is reused), ``down`` stops only what
``up`` started (an external ``TALLY_REDIS_URL`` is never touched), ``status`` reports each component.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from streaming.endpoints import Endpoints, StackNotRunning, resolve  # noqa: F401 - StackNotRunning re-exported
from streaming.resources import ResourceNames, ensure_all
from streaming.settings import AWS_SERVICES, SettingError, Settings, redact_url
from streaming.stack.process import free_port, pid_alive, port_in_use, spawn, stop_pid, wait_until
from streaming.stack.redis_local import RedisServer, find_redis_server, server_version


@dataclass
class Component:
    name: str
    url: str
    origin: str
    started_by_tally: bool
    pid: int | None = None
    port: int | None = None
    version: str = ""

    def alive(self) -> bool:
        if not self.started_by_tally:
            return True
        return pid_alive(self.pid) and self.port is not None and port_in_use(self.port)


def _state_path(settings: Settings) -> Path:
    return settings.home / "stack.json"


def load_state(settings: Settings) -> dict[str, Component]:
    path = _state_path(settings)
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {name: Component(**value) for name, value in raw.items()}


def _save_state(settings: Settings, state: dict[str, Component]) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    path = _state_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in state.items()}, indent=2))
    tmp.replace(path)


def _start_emulator(settings: Settings) -> Component:
    port = settings.emulator_port
    if port is not None and port_in_use(port):
        raise SettingError(
            "TALLY_EMULATOR_PORT", str(port), "is already in use by another process",
            "unset TALLY_EMULATOR_PORT to let tally pick a free port, or choose a port nothing listens on",
        )
    port = port or free_port()
    log = settings.home / "logs" / "emulator.log"
    proc = spawn(
        [sys.executable, "-m", "streaming.stack.emulator", "--host", "127.0.0.1", "--port", str(port),
         "--retention-s", str(settings.emulator_retention_s),
         "--max-records-per-shard", str(settings.emulator_max_records_per_shard)],
        log,
    )
    wait_until(lambda: port_in_use(port), 60, f"AWS emulator on port {port}", proc, log)
    import moto

    return Component("aws-emulator", f"http://127.0.0.1:{port}", "moto (patched, in-process)", True,
                     proc.pid, port, moto.__version__)


def _start_redis(settings: Settings) -> Component:
    # Stable file names: each `up` takes a free port, and the next one loads what the last one wrote.
    server = RedisServer(workdir=settings.home / "redis", appendonly=True, appendfsync="everysec", data_name="tally")
    server.start()
    return Component("redis", server.url, f"redis-server from {server.origin}", True, server.proc.pid if server.proc else None,
                     server.port, server_version(server.binary))


def _external_redis(settings: Settings) -> Component:
    assert settings.redis_url is not None
    return Component("redis", settings.redis_url, "TALLY_REDIS_URL", False)


def up(settings: Settings) -> dict[str, Component]:
    """Start what is not running, create the stream, bucket and lease table; return the components in use.

    A failed ``up`` leaves ``stack.json`` and the running services as they were: an external Redis
    (``TALLY_REDIS_URL``) is checked before anything changes, ``up`` never stops a running component,
    and what this call started is stopped again (and ``stack.json`` restored byte for byte) when a later
    step fails. ``stack.json`` records only what tally started: a URL from a variable is never written
    there, so a command run later without the variable never goes to that address.
    """
    if settings.redis_url is not None:
        _check_redis(settings.redis_url)
    path = _state_path(settings)
    before = path.read_bytes() if path.exists() else None
    state = load_state(settings)
    started: list[Component] = []
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        needs_emulator = settings.is_local and any(s not in settings.aws_endpoints for s in AWS_SERVICES)
        emulator = state.get("aws-emulator")
        if needs_emulator and (emulator is None or not emulator.alive()):
            state["aws-emulator"] = _start_emulator(settings)
            started.append(state["aws-emulator"])
            _save_state(settings, state)
        if settings.redis_url is None:
            current = state.get("redis")
            if current is None or not current.started_by_tally or not current.alive():
                state["redis"] = _start_redis(settings)
                started.append(state["redis"])
                _save_state(settings, state)
        endpoints = resolve_endpoints(settings, state)
        _check_redis(endpoints.redis_url)
        names = ResourceNames(settings.stream_name, settings.stream_shards, settings.bucket, settings.lease_table)
        ensure_all(endpoints.client("kinesis", settings.aws_region), endpoints.client("s3", settings.aws_region),
                   endpoints.client("dynamodb", settings.aws_region), names, settings.aws_region)
        collector = state.get("collector")
        if collector is None or not collector.alive():
            state["collector"] = _start_collector(settings, endpoints)
            started.append(state["collector"])
            _save_state(settings, state)
    except BaseException:
        for component in started:
            if component.pid:
                stop_pid(component.pid)
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        raise
    in_use = dict(state)
    if settings.redis_url is not None:
        in_use["redis"] = _external_redis(settings)
    return in_use


def _start_collector(settings: Settings, endpoints: Endpoints) -> Component:
    """The collector on loopback: its own process, with the settings ``up`` was given (they may not be
    this process's environment), its state in TALLY_COLLECTOR_STATE_DIR, and Kinesis and DynamoDB where
    ``up`` resolved them."""
    c = settings.collector
    if c.port is not None and port_in_use(c.port):
        raise SettingError("TALLY_COLLECTOR_PORT", str(c.port), "is already in use by another process",
                           "unset TALLY_COLLECTOR_PORT to let tally pick a free port, or choose a port nothing listens on")
    port = c.port or free_port()
    log = settings.home / "logs" / "collector.log"
    env = {**os.environ, **settings.raw, "TALLY_HOME": str(settings.home.resolve()),
           "TALLY_COLLECTOR_STATE_DIR": str(c.state_dir.resolve())}
    for service in ("kinesis", "dynamodb"):
        url = endpoints.aws_url(service)
        if url:
            env[f"TALLY_AWS_ENDPOINT_URL_{service.upper()}"] = url
    proc = spawn([sys.executable, "-m", "streaming.collector.run", "--host", "127.0.0.1", "--port", str(port)], log, env)
    wait_until(lambda: port_in_use(port), 60, f"collector on port {port}", proc, log)
    return Component("collector", f"http://127.0.0.1:{port}", "tally collector (uvicorn)", True, proc.pid, port)


def down(settings: Settings) -> list[str]:
    """Stop the components ``up`` started; return their names."""
    state = load_state(settings)
    stopped = []
    # Last started, first stopped: the collector's drainer can still hand Kinesis what it holds.
    for name, component in reversed(list(state.items())):
        if component.started_by_tally and component.pid:
            stop_pid(component.pid)
            stopped.append(name)
        del state[name]
    _save_state(settings, state)
    return stopped


def _check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        raise SettingError(
            "TALLY_REDIS_URL", redact_url(url), f"does not answer ({type(exc).__name__})",
            "point TALLY_REDIS_URL at a running Redis, or unset it to let tally start one",
        ) from None


def resolve_endpoints(settings: Settings, state: dict[str, Component] | None = None,
                      require_running: bool = True) -> Endpoints:
    """Where each service is: variables first, then what ``tally stack up`` recorded in ``stack.json``
    (see :func:`streaming.endpoints.resolve`). ``require_running=False`` takes what ``stack.json``
    recorded even when it is not running now (Dagster definitions must load while the stack is down)."""
    return resolve(settings, load_state(settings) if state is None else state, require_running)


def _redis_details(url: str) -> dict[str, Any]:
    try:
        info = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).info()
    except redis.RedisError as exc:
        return {"running": False, "error": type(exc).__name__}
    keys = sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
    return {"running": True, "version": info.get("redis_version", ""), "memory": info.get("used_memory_human"),
            "keys": keys}


def _answers(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        return port_in_use(port, parsed.hostname or "127.0.0.1")
    except OSError:  # a host name that does not resolve
        return False


def status(settings: Settings) -> list[dict[str, Any]]:
    """One row per component: name, running, where, origin, version, details (Redis memory), and what
    uses it (``used_by``): commands use the variables' endpoints first, then what ``up`` started."""
    state = load_state(settings)
    endpoints = resolve_endpoints(settings, state, require_running=False)
    rows: list[dict[str, Any]] = []
    for name, component in state.items():
        row: dict[str, Any] = {
            "component": name, "running": component.alive(), "url": redact_url(component.url),
            "origin": component.origin, "version": component.version, "pid": component.pid,
        }
        if name == "collector":
            from streaming.collector.spool import spool_status

            spool = spool_status(settings.collector.state_dir)
            row.update(spool_bytes=spool["depth_bytes"], drained=spool["drained"], source_id=spool["source_id"])
            from streaming.collector.forward import forward_status

            forward = forward_status(settings.collector.state_dir)
            if forward is not None:
                row.update(forward_bytes=forward["depth_bytes"], forward_lag_s=forward.get("lag_s", 0.0),
                           forward_failures=forward.get("failures", 0), forwarded=forward.get("forwarded", 0),
                           forward_rejected=forward.get("rejected", 0))
        if name == "aws-emulator":
            used = [s for s in AWS_SERVICES if endpoints.aws.get(s) == component.url]
            row["used_by"] = ", ".join(used) if used else "nothing: every service has an endpoint variable"
        elif name == "redis":
            row["used_by"] = "commands" if endpoints.redis == component.url else "nothing: TALLY_REDIS_URL is set"
            if row["running"]:
                row.update({k: v for k, v in _redis_details(component.url).items() if v is not None})
        rows.append(row)
    explicit: dict[str, list[str]] = {}
    for service in AWS_SERVICES:
        if service in settings.aws_endpoints:
            explicit.setdefault(settings.aws_endpoints[service].url, []).append(service)
    for url, services in explicit.items():
        variables = sorted({settings.aws_endpoints[s].variable for s in services})
        rows.append({"component": "aws", "running": _answers(url), "url": redact_url(url),
                     "origin": ", ".join(variables), "version": "", "pid": None, "used_by": ", ".join(services)})
    if settings.redis_url is not None:
        row = {"component": "redis", "running": False, "url": redact_url(settings.redis_url),
               "origin": "TALLY_REDIS_URL", "version": "", "pid": None, "used_by": "commands"}
        row.update({k: v for k, v in _redis_details(settings.redis_url).items() if v is not None})
        rows.append(row)
    if not any(r["component"] == "redis" for r in rows):
        try:
            binary, origin = find_redis_server()
            rows.append({"component": "redis", "running": False, "url": "", "origin": f"would start redis-server from {origin}",
                         "version": server_version(binary), "pid": None})
        except RuntimeError as exc:
            rows.append({"component": "redis", "running": False, "url": "", "origin": str(exc), "version": "", "pid": None})
    rows.append({"component": "warehouse", "running": settings.duckdb_path.exists(), "url": str(settings.duckdb_path),
                 "origin": "DuckDB file" if settings.is_local else "Snowflake", "version": "", "pid": None,
                 "used_by": "commands"})
    return rows
