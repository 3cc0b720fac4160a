"""`tally stack up | down | status`: the embedded default's services, on loopback, with state in TALLY_HOME.

``up`` is idempotent (a live component recorded in ``stack.json`` is reused), ``down`` stops only what
``up`` started (an external ``TALLY_REDIS_URL`` is never touched), ``status`` reports each component.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from streaming.aws import aws_client
from streaming.resources import ResourceNames, ensure_all
from streaming.settings import SettingError, Settings, redact_url
from streaming.stack.process import free_port, pid_alive, port_in_use, spawn, stop_pid, wait_until
from streaming.stack.redis_local import RedisServer, find_redis_server, server_version


class StackNotRunning(RuntimeError):
    pass


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


@dataclass
class Endpoints:
    """Where the running services are: what every command and the Dagster resources connect to."""

    aws_endpoint_url: str | None
    redis_url: str


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
    """Start what is not running, create the stream, bucket and lease table; return the components."""
    state = load_state(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.is_local and settings.aws_endpoint_url is None:
        emulator = state.get("aws-emulator")
        if emulator is None or not emulator.alive():
            state["aws-emulator"] = _start_emulator(settings)
            _save_state(settings, state)
    if settings.redis_url is not None:
        old = state.get("redis")
        if old is not None and old.started_by_tally:
            stop_pid(old.pid or 0)
        state["redis"] = _external_redis(settings)
    else:
        current = state.get("redis")
        if current is None or not current.started_by_tally or not current.alive():
            state["redis"] = _start_redis(settings)
    _save_state(settings, state)
    endpoints = resolve_endpoints(settings, state)
    _check_redis(endpoints.redis_url)
    names = ResourceNames(settings.stream_name, settings.stream_shards, settings.bucket, settings.lease_table)
    ensure_all(
        aws_client("kinesis", settings.aws_region, endpoints.aws_endpoint_url),
        aws_client("s3", settings.aws_region, endpoints.aws_endpoint_url),
        aws_client("dynamodb", settings.aws_region, endpoints.aws_endpoint_url),
        names,
        settings.aws_region,
    )
    return state


def down(settings: Settings) -> list[str]:
    """Stop the components ``up`` started; return their names."""
    state = load_state(settings)
    stopped = []
    for name, component in list(state.items()):
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


def resolve_endpoints(settings: Settings, state: dict[str, Component] | None = None) -> Endpoints:
    """The AWS endpoint and Redis URL to use: settings first, then what ``tally stack up`` started."""
    state = load_state(settings) if state is None else state
    aws_url = settings.aws_endpoint_url
    if settings.is_local and aws_url is None:
        emulator = state.get("aws-emulator")
        if emulator is None or not emulator.alive():
            raise StackNotRunning("The local AWS emulator is not running. Fix: run `tally stack up` (or `make demo`).")
        aws_url = emulator.url
    redis_url = settings.redis_url
    if redis_url is None:
        component = state.get("redis")
        if component is None or not component.alive():
            raise StackNotRunning("No Redis is running for tally. Fix: run `tally stack up`, or set TALLY_REDIS_URL.")
        redis_url = component.url
    return Endpoints(aws_url, redis_url)


def status(settings: Settings) -> list[dict[str, Any]]:
    """One row per component: name, running, where, origin, version, and details (Redis memory)."""
    state = load_state(settings)
    rows: list[dict[str, Any]] = []
    if settings.redis_url is not None and "redis" not in state:
        state["redis"] = _external_redis(settings)
    for name, component in state.items():
        row: dict[str, Any] = {
            "component": name, "running": component.alive(), "url": redact_url(component.url),
            "origin": component.origin, "version": component.version, "pid": component.pid,
        }
        if name == "redis" and row["running"]:
            try:
                info = redis.Redis.from_url(component.url, socket_connect_timeout=2).info()
                row["version"] = info.get("redis_version", component.version)
                row["memory"] = info.get("used_memory_human")
                row["keys"] = sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
            except redis.RedisError as exc:
                row["running"] = False
                row["error"] = type(exc).__name__
        rows.append(row)
    if not any(r["component"] == "redis" for r in rows):
        try:
            binary, origin = find_redis_server()
            rows.append({"component": "redis", "running": False, "url": "", "origin": f"would start redis-server from {origin}",
                         "version": server_version(binary), "pid": None})
        except RuntimeError as exc:
            rows.append({"component": "redis", "running": False, "url": "", "origin": str(exc), "version": "", "pid": None})
    rows.append({"component": "warehouse", "running": settings.duckdb_path.exists(), "url": str(settings.duckdb_path),
                 "origin": "DuckDB file" if settings.is_local else "Snowflake", "version": "", "pid": None})
    return rows
