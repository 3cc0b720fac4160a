"""Open the speed layer's Redis: a single node or a Redis Cluster, told apart by asking the server."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster

from streaming.outages import TRANSIENT_ERRORS  # noqa: F401 - the speed layer's modules import it from here


def connect(url: str, *, socket_timeout: float = 10.0) -> Any:
    """``redis.Redis`` for a single node, ``RedisCluster`` when the node says ``cluster_enabled:1``.

    One URL setting serves both deployments; the same key layout and scripts run on either.
    """
    probe = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=socket_timeout)
    try:
        cluster = bool(probe.info("cluster").get("cluster_enabled"))
    finally:
        probe.close()
    if cluster:
        return RedisCluster.from_url(url, socket_connect_timeout=5, socket_timeout=socket_timeout)
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=socket_timeout)
