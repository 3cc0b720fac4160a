"""Shard leases in DynamoDB: who processes which shard, with a fencing token, and where it got to.

One item per (group, stream, shard): ``owner``, ``token``, ``expires_at``, ``checkpoint``, and the shard's
*position* (``pos_arrival``, ``pos_tip``, ``pos_at``: see :class:`Position`). Every change of
owner increments ``token`` by a conditional write, so a token is held by exactly one worker and a newer
owner always has a larger one: sinks that store the token next to their data (Redis markers) can refuse
a write from a worker that lost its lease but has not noticed yet. Renewals and checkpoints are
conditional on ``owner`` *and* ``token``, so they fail for a worker whose lease was taken.

Workers also keep a heartbeat item each, so a worker knows how many peers share the shards and takes
its fair share (stealing one lease at a time from a peer that holds more than its share).

Expiry uses wall-clock time; workers sharing a table need clocks within a fraction of the lease duration
of each other (NTP gives milliseconds).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from streaming.kinesis.processor import LeaseLost, Position  # noqa: F401 - defined with the lifecycle (no botocore)

SHARD_END = "SHARD_END"


@dataclass(frozen=True)
class Lease:
    shard_id: str
    owner: str | None
    token: int
    expires_at: float
    checkpoint: str | None
    position: Position = Position()

    def expired(self, now: float) -> bool:
        return self.owner is None or self.expires_at < now


def _position_update(position: Position) -> tuple[str, dict[str, Any]]:
    """The SET clauses (appended to an UpdateExpression) and values that record ``position``."""
    expression = ", pos_tip = :tip"
    values: dict[str, Any] = {":tip": {"BOOL": position.at_tip}}
    if position.arrival is not None:
        expression += ", pos_arrival = :arr"
        values[":arr"] = {"N": repr(position.arrival)}
    if position.observed_at is not None:
        expression += ", pos_at = :at"
        values[":at"] = {"N": repr(position.observed_at)}
    return expression, values


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class LeaseTable:
    def __init__(self, dynamodb: Any, table: str, group: str, stream_name: str) -> None:
        self.ddb = dynamodb
        self.table = table
        self.group = group
        self.stream_name = stream_name

    def _key(self, shard_id: str) -> dict[str, Any]:
        return {"lease_key": {"S": f"{self.group}#{self.stream_name}#{shard_id}"}}

    def _worker_key(self, worker_id: str) -> dict[str, Any]:
        return {"lease_key": {"S": f"{self.group}#{self.stream_name}#worker#{worker_id}"}}

    @staticmethod
    def _parse(item: dict[str, Any]) -> Lease:
        return Lease(
            shard_id=item["shard_id"]["S"],
            owner=item.get("owner", {}).get("S"),
            token=int(item.get("token", {}).get("N", "0")),
            expires_at=float(item.get("expires_at", {}).get("N", "0")),
            checkpoint=item.get("checkpoint", {}).get("S"),
            position=Position(
                arrival=float(item["pos_arrival"]["N"]) if "pos_arrival" in item else None,
                at_tip=bool(item.get("pos_tip", {}).get("BOOL", False)),
                observed_at=float(item["pos_at"]["N"]) if "pos_at" in item else None,
            ),
        )

    def _scan(self) -> Iterator[dict[str, Any]]:
        prefix = f"{self.group}#{self.stream_name}#"
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "FilterExpression": "begins_with(lease_key, :p)", "ExpressionAttributeValues": {":p": {"S": prefix}},
        }
        while True:
            page = self.ddb.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def leases(self) -> dict[str, Lease]:
        return {item["shard_id"]["S"]: self._parse(item) for item in self._scan() if "shard_id" in item}

    def live_workers(self, now: float) -> set[str]:
        return {
            item["worker_id"]["S"] for item in self._scan()
            if "worker_id" in item and float(item["expires_at"]["N"]) >= now
        }

    def heartbeat(self, worker_id: str, duration_s: float) -> None:
        self.ddb.put_item(TableName=self.table, Item={
            **self._worker_key(worker_id), "worker_id": {"S": worker_id},
            "expires_at": {"N": repr(time.time() + duration_s)},
        })

    def remove_worker(self, worker_id: str) -> None:
        self.ddb.delete_item(TableName=self.table, Key=self._worker_key(worker_id))

    def take(self, shard_id: str, worker_id: str, duration_s: float, seen: Lease | None) -> Lease:
        """Take the shard if it is still as ``seen`` (absent, expired, or a peer's we are stealing)."""
        now = time.time()
        new_token = (seen.token if seen else 0) + 1
        values: dict[str, Any] = {
            ":owner": {"S": worker_id}, ":token": {"N": str(new_token)},
            ":exp": {"N": repr(now + duration_s)}, ":sid": {"S": shard_id},
        }
        if seen is None:
            condition = "attribute_not_exists(lease_key)"
        else:
            condition = "#token = :seen_token"
            values[":seen_token"] = {"N": str(seen.token)}
        try:
            response = self.ddb.update_item(
                TableName=self.table, Key=self._key(shard_id),
                UpdateExpression="SET #owner = :owner, #token = :token, expires_at = :exp, shard_id = :sid",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#owner": "owner", "#token": "token"},
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                raise LeaseLost(shard_id) from None
            raise
        return self._parse(response["Attributes"])

    def _owned_update(self, lease: Lease, expression: str, values: dict[str, Any], remove_owner: bool = False) -> dict[str, Any]:
        try:
            return self.ddb.update_item(
                TableName=self.table, Key=self._key(lease.shard_id),
                UpdateExpression=expression + (" REMOVE #owner" if remove_owner else ""),
                ConditionExpression="#owner = :me AND #token = :token",
                ExpressionAttributeNames={"#owner": "owner", "#token": "token"},
                ExpressionAttributeValues={":me": {"S": lease.owner or ""}, ":token": {"N": str(lease.token)}, **values},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if _conditional_failed(exc):
                raise LeaseLost(lease.shard_id) from None
            raise

    def renew(self, lease: Lease, duration_s: float, position: Position | None = None) -> Lease:
        expression, values = "SET expires_at = :exp", {":exp": {"N": repr(time.time() + duration_s)}}
        if position is not None:
            more, position_values = _position_update(position)
            expression += more
            values.update(position_values)
        return self._parse(self._owned_update(lease, expression, values))

    def checkpoint(self, lease: Lease, sequence: str, position: Position | None = None) -> Lease:
        expression, values = "SET checkpoint = :cp", {":cp": {"S": sequence}}
        if position is not None:
            more, position_values = _position_update(position)
            expression += more
            values.update(position_values)
        return self._parse(self._owned_update(lease, expression, values))

    def record_position(self, shard_id: str, sequence: str, position: Position) -> None:
        """Record a position where no lease is held (the Lambda handler: the event source mapping owns
        the shard). The checkpoint never moves back: a re-delivered older batch leaves it as it is."""
        expression, values = _position_update(position)
        try:
            self.ddb.update_item(
                TableName=self.table, Key=self._key(shard_id),
                UpdateExpression="SET checkpoint = :cp, shard_id = :sid" + expression,
                ConditionExpression="attribute_not_exists(checkpoint) OR size(checkpoint) < :len "
                                    "OR (size(checkpoint) = :len AND checkpoint < :cp)",
                ExpressionAttributeValues={":cp": {"S": sequence}, ":sid": {"S": shard_id},
                                           ":len": {"N": str(len(sequence))}, **values},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def release(self, lease: Lease) -> None:
        """Give the shard up (clean shutdown): the next taker need not wait for expiry."""
        try:
            self._owned_update(lease, "SET expires_at = :zero", {":zero": {"N": "0"}}, remove_owner=True)
        except LeaseLost:
            pass
