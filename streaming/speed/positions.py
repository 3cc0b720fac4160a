"""What Redis provably holds of a shard, and where the speed layer must read again when it holds less.

**Redis is lossy.** With ``appendfsync everysec`` a crash loses up to a second or two of writes Redis
acknowledged; a failover to a replica loses what had not reached it yet; a node restarted without
persistence loses everything. The consumer may already have checkpointed those batches in DynamoDB, so
the checkpoint alone would skip them for good. The applied-sequence markers live in Redis beside the
counters (one per tenant × shard, written in the same atomic call), so they are lost *with* the counters:
what survives is consistent, but the consumer must find out that it lost something and from where to
read again.

**What is lost, in what order.** A Redis node loses a *suffix* of its write history: the AOF is replayed
in order and a truncated tail (or an unterminated MULTI/EXEC, how a script's effects are logged) is cut
off; a replica applies its master's stream in order, so a promoted replica holds a prefix too. On Redis
Cluster each node loses its *own* suffix, independently. Nothing else loses acknowledged writes (tally
requires ``maxmemory-policy noeviction``).

**Position floors.** After every batch has committed (every tenant's call, then its dead letters), the
consumer writes the shard's position floor — the batch's last sequence number — to **every** master node,
under a hash tag that lives on that node (a ``_pos<n>`` tag, :func:`keys.shard_position`). A node
applied every write of those batches *before* the floor write, so by the prefix property a floor that
survived on a node proves that node holds every write of the shard up to it. The shard is whole up to the
smallest floor over the nodes; a node without a floor proves nothing (read from the trim horizon).

**Noticing a loss.** A node can only lose writes by restarting (or by a replica taking over), and then
its ``run_id`` changes. Every apply call and every floor write carries the run id of the node as the
processor last verified it, and the script refuses, writing nothing, when the node's run id differs
(``INFO server``, ~5 us a call). So no write ever lands on a node that may have lost earlier ones before
the processor has looked at that node's floor (:func:`lost_after`): if the floor is below the floor the
processor last wrote everywhere, the node lost committed batches, and the processor asks the worker to
read the shard again after the lowest such floor (:class:`streaming.kinesis.processor.ResetShard`); if
not (a clean restart that kept everything), it takes the new run id and sends the same batch again. The
floor write on every node after each batch, and on idle ticks, catches a restart of a node that no
tenant of the shard writes to. At ``initialize`` the same comparison against the lease checkpoint
picks the resume point: the checkpoint, or the lowest floor below it, or the trim horizon.

**Why reading again is exact.** Re-read records pass the same apply script: a tenant whose marker is
still past them skips them (those writes survived), a tenant whose marker went back with the loss applies
them again, on a state that is exactly its state before them (marker, counters, HyperLogLogs, top pages,
segment states and dedup seen-sets share the tenant's slot, so they were lost together). A duplicate of an
event_id inside the dedup horizon still counts once: if the first copy survived, the seen-set that
survived with it drops the repeat; if it was lost, the seen-set lost it too and the re-read counts it once.
The processor forgets its in-memory recent ids at a reset (they may name events Redis lost).

**On Redis Cluster** every node has its own floor and run id, so a loss on one node sends the shard
back to that node's floor; tenants on the other nodes skip the re-read by their markers.

**What remains a limit.** Records the stream no longer holds (past its retention, or trimmed) cannot be
re-read: ``tally heal`` restores those closed windows from the warehouse. A slot migrated to a node that
then loses the migration loses the migrated keys (their floor is elsewhere); a parent shard already at
SHARD_END is not read again; an operator's FLUSHALL keeps the run id (restart the consumers: their
``initialize`` finds no floors and reads from the trim horizon). The Lambda handler cannot rewind its
event source mapping and does not check run ids: heal repairs what it loses. A first start after an
upgrade finds no floors and reads the stream from its trim horizon once (the markers make it a no-op).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.cluster import RedisCluster

from streaming.speed import keys, scripts

SINGLE_NODE = "_"
#: How far to look for a ``_pos<n>`` tag per master (16384 slots over a few masters: a handful suffice).
_MAX_TAGS = 100_000


class NodeRestarted(RuntimeError):
    """A script ran on a node other than the one verified (new run id), or a node was never verified:
    nothing was written there; the caller verifies the node's floor, then sends again or reads again."""

    def __init__(self, nodes: list[str]) -> None:
        super().__init__(f"Redis node(s) {', '.join(sorted(nodes))} restarted or not yet verified")
        self.nodes = nodes


class PositionFenced(RuntimeError):
    """A newer lease owner wrote the shard's floor."""


@dataclass(frozen=True)
class NodeView:
    """One master node as read: its run id and the shard's floor there (None: none)."""

    name: str
    run_id: str
    floor: str | None


class _NothingLost:
    def __repr__(self) -> str:
        return "NOTHING_LOST"


NOTHING_LOST: Any = _NothingLost()


def lost_after(expected: str | None, floors: Mapping[str, str | None]) -> str | None | _NothingLost:
    """Where to read again so every node holds what lies before it, or :data:`NOTHING_LOST`.

    ``expected``: the floor every node should hold (the last one written everywhere, or the lease
    checkpoint at ``initialize``); None expects nothing (reading from the trim horizon already). A node
    whose floor is missing or below it lost writes: the answer is the lowest such floor (None: the trim
    horizon, when one of them has no floor at all)."""
    if expected is None:
        return NOTHING_LOST
    lost = [f for f in floors.values() if f is None or int(f) < int(expected)]
    if not lost:
        return NOTHING_LOST
    if any(f is None for f in lost):
        return None
    return min(lost, key=int)


def node_of(client: Any, key: str) -> str:
    """The name of the master holding ``key`` (:data:`SINGLE_NODE` on a single Redis)."""
    if isinstance(client, RedisCluster):
        return str(client.get_node_from_key(key).name)
    return SINGLE_NODE


class ShardPositions:
    """Position floors of one consumer group's shards on every master node."""

    def __init__(self, client: Any, group: str, ttl_s: int) -> None:
        self.client = client
        self.group = group
        self.ttl_s = ttl_s
        self._script = scripts.register(client, "position")

    def nodes(self) -> dict[str, str]:
        """Node name -> a hash tag whose slot that master holds (recomputed from the cluster's slot map)."""
        if not isinstance(self.client, RedisCluster):
            return {SINGLE_NODE: "_pos"}
        masters = {n.name for n in self.client.get_primaries()}
        tags: dict[str, str] = {}
        for i in range(_MAX_TAGS):
            if len(tags) == len(masters):
                break
            tag = f"_pos{i}"
            name = node_of(self.client, keys.shard_position(tag, self.group, "x"))
            if name in masters:
                tags.setdefault(name, tag)
        return tags

    def read(self, shard_id: str) -> dict[str, NodeView]:
        """Every master's run id and floor for the shard."""
        views = {}
        for name, tag in self.nodes().items():
            run_id, _, seq = self._script(keys=[keys.shard_position(tag, self.group, shard_id)], args=["read"])
            views[name] = NodeView(name, _text(run_id), _text(seq) if seq else None)
        return views

    def write(self, shard_id: str, lease_token: int, seq: str, run_ids: Mapping[str, str]) -> None:
        """The floor ``seq`` on every master, each only if it is still the node verified (``run_ids``).

        Raises :class:`NodeRestarted` (nothing written on those nodes; an unknown node is not written at
        all) or :class:`PositionFenced`."""
        nodes = self.nodes()
        unknown = [n for n in nodes if n not in run_ids]
        if unknown:
            raise NodeRestarted(unknown)
        restarted = []
        for name, tag in nodes.items():
            reply = self._script(keys=[keys.shard_position(tag, self.group, shard_id)],
                                 args=["write", run_ids[name], lease_token, seq, self.ttl_s])
            status = _text(reply[0])
            if status == "incarnation":
                restarted.append(name)
            elif status == "fenced":
                raise PositionFenced(f"shard {shard_id}: a newer lease owner (token {_text(reply[1])}) wrote its floor")
        if restarted:
            raise NodeRestarted(restarted)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
