"""The Lua scripts of tally's Redis layout: each one a ``<name>.lua`` file beside this module, read here.

Every Lua script tally runs on Redis is one of these files; no module holds Lua in a string. Callers
get a redis-py :class:`~redis.commands.core.Script` from :func:`register`, or the source from
:func:`source` when they send ``EVALSHA`` themselves (the apply path pipelines it per node).

**Why EVALSHA (redis-py ``Script``) and not Redis 7 Functions (``FUNCTION LOAD`` / ``FCALL``).**
Functions were weighed for reloads and Cluster and rejected, for now:

* *Reload after a restart or failover.* A ``Script`` sends ``EVALSHA`` and, on ``NOSCRIPT``, loads the
  source and retries, on whichever node answered; the apply path does the same by hand for its
  pipelines (:meth:`streaming.speed.store.SpeedStore._run`). Nothing has to run at deploy time or after
  a failover. Functions do persist in the RDB/AOF and replicate, so a restart that keeps its data keeps
  them; but tally is built for the Redis that comes back *empty* (DESIGN.md, "Redis is lossy") and for a
  new node joining a cluster, and there an ``FCALL`` fails with "Function not found": redis-py has no
  retry for that, so tally would write its own load-on-miss, i.e. rebuild what ``Script`` gives.
* *Cluster.* ``EVALSHA`` goes to the node of the key it names, and on a miss the client loads the
  script there and retries. A function library must be loaded on every primary ahead of the first
  call (and again on each node a reshard or failover adds); the keys rule (every key in one slot,
  named in ``KEYS``) is the same for both.
* *Deploys.* A script is addressed by its SHA-1, so two versions of tally (a rolling deploy, a Lambda
  and a worker on different releases) run side by side. A function library is addressed by name, and
  ``FUNCTION LOAD REPLACE`` by the new release changes the code the old one calls mid-flight.
* *Versions.* ``EVALSHA`` works on Redis 6 as on 7 (Functions need 7.0); the tests run redis-server
  7.0, which has both, so either would be tested, and ``tests/speed/test_apply.py`` asserts the apply
  path costs one ``EVALSHA`` per call.

Moving to Functions later is local to this module and the apply path's raw pipeline.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

SCRIPT_DIR = Path(__file__).parent


@cache
def source(name: str) -> str:
    """The text of ``<name>.lua`` beside this module (read once per process)."""
    path = SCRIPT_DIR / f"{name}.lua"
    if not path.is_file():
        known = ", ".join(names())
        raise FileNotFoundError(f"no Lua script {name!r} in {SCRIPT_DIR} (there are: {known})")
    return path.read_text()


def names() -> list[str]:
    """Every script's name (the ``.lua`` files beside this module)."""
    return sorted(p.stem for p in SCRIPT_DIR.glob("*.lua"))


def register(client: Any, name: str) -> Any:
    """A redis-py ``Script`` for ``<name>.lua`` on ``client`` (``Redis`` or ``RedisCluster``): called, it
    sends ``EVALSHA`` and loads the source on ``NOSCRIPT``."""
    return client.register_script(source(name))
