"""Deletion requests, stored durably in the archive's bucket: the audit record and the work in flight.

``audit/forget/<tenant>/<request_id>.json`` is the audit record *and* the progress: request id, tenant,
the subject's hash (never the user id), when it was asked and each step started and finished, and per
layer what was removed and how much. It is rewritten after every step (an S3 PUT replaces an object
atomically), so a process killed mid-way leaves the last finished step recorded and a re-run resumes
after it. It holds no personal data, and it is kept after the request is done.

``privacy/work/<tenant>/<request_id>.json`` holds what a resumed request needs and the audit must not:
the user id and the anonymous ids found. It exists only while the request runs and is deleted when it
completes.

Why S3 and not the warehouse or Redis: the bucket is already every environment's durable store (the
archive is the master dataset), it is there in local and prod alike, it survives a Redis flush and a
warehouse rebuild, and a deletion must be provable after the data it removed is gone.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from streaming.privacy.subject import BadRequest, check_tenant

AUDIT_PREFIX = "audit/forget/"
WORK_PREFIX = "privacy/work/"
REQUEST_ID_RE = re.compile(r"^fr_[0-9a-f]{32}$")
STEPS = ("discover", "suppress", "speed", "archive", "warehouse", "rebuild", "verify")


__all__ = ["BadRequest", "Request", "RequestStore", "UnknownRequest"]


class UnknownRequest(LookupError):
    """No deletion request with that id for that tenant."""


def new_request_id() -> str:
    return f"fr_{uuid.uuid4().hex}"


def check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not REQUEST_ID_RE.match(request_id):
        raise UnknownRequest("a request id looks like fr_ followed by 32 hex digits")
    return request_id


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Request:
    """The audit record of one deletion request (see the module docstring for what it may hold)."""

    request_id: str
    tenant: str
    subject: str  # subject_hash of the user id
    since_ms: int
    requested_at: str
    requested_by: str
    status: str = "pending"  # pending | running | done | failed
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    forgotten: list[list[Any]] = field(default_factory=list)  # [tenant, event type, minute ISO, lines]
    error: str | None = None
    finished_at: str | None = None

    def step(self, name: str) -> dict[str, Any]:
        return self.steps.setdefault(name, {"status": "pending"})

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "tenant": self.tenant, "subject": self.subject,
            "since_ms": self.since_ms, "requested_at": self.requested_at, "requested_by": self.requested_by,
            "status": self.status, "finished_at": self.finished_at, "error": self.error,
            "steps": {name: self.step(name) for name in STEPS}, "forgotten": self.forgotten,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Request:
        return cls(doc["request_id"], doc["tenant"], doc["subject"], int(doc["since_ms"]), doc["requested_at"],
                   doc["requested_by"], doc["status"], dict(doc.get("steps", {})), list(doc.get("forgotten", [])),
                   doc.get("error"), doc.get("finished_at"))


class RequestStore:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    @staticmethod
    def audit_key(tenant: str, request_id: str) -> str:
        return f"{AUDIT_PREFIX}{check_tenant(tenant)}/{check_request_id(request_id)}.json"

    @staticmethod
    def work_key(tenant: str, request_id: str) -> str:
        return f"{WORK_PREFIX}{check_tenant(tenant)}/{check_request_id(request_id)}.json"

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    def _put(self, key: str, doc: dict[str, Any]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(doc, indent=1).encode(),
                           ContentType="application/json")

    def save(self, request: Request) -> None:
        self._put(self.audit_key(request.tenant, request.request_id), request.to_json())

    def load(self, tenant: str, request_id: str) -> Request:
        doc = self._get(self.audit_key(tenant, request_id))
        if doc is None:
            raise UnknownRequest("no deletion request with that id for that tenant")
        return Request.from_json(doc)

    def find(self, request_id: str) -> Request:
        """A request by id alone (operators' `tally forget --status`), whatever its tenant."""
        check_request_id(request_id)
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=AUDIT_PREFIX):
            for item in page.get("Contents", []):
                if item["Key"].endswith(f"/{request_id}.json"):
                    return Request.from_json(self._get(item["Key"]) or {})
        raise UnknownRequest("no deletion request with that id")

    def requests(self, tenant: str | None = None) -> list[Request]:
        prefix = AUDIT_PREFIX + (f"{check_tenant(tenant)}/" if tenant else "")
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                doc = self._get(item["Key"])
                if doc is not None:
                    found.append(Request.from_json(doc))
        return sorted(found, key=lambda r: r.requested_at)

    def save_work(self, tenant: str, request_id: str, work: dict[str, Any]) -> None:
        self._put(self.work_key(tenant, request_id), work)

    def load_work(self, tenant: str, request_id: str) -> dict[str, Any] | None:
        return self._get(self.work_key(tenant, request_id))

    def delete_work(self, tenant: str, request_id: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.work_key(tenant, request_id))
