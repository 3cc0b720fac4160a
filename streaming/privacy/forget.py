"""Forget a person: one deletion request, in idempotent steps, resumable after a kill.

Steps, in this order (each recorded in the audit record when it finishes; a re-run skips finished ones):

``discover``   the anonymous ids stitched to the user, from the warehouse and the archive
``suppress``   the user id and those anonymous ids go on the suppression list from ``since_ms`` on, so
               the speed layer and the archiver keep nothing new about them (before any erasure, so
               nothing arriving meanwhile is written back)
``speed``      Redis: segment memberships and segment state of the anonymous ids, and the dead letters
               whose raw bytes name the subject (:mod:`streaming.privacy.deadletters`; counted in the
               audit as ``dead_letters_removed``, a number only)
``archive``    S3: rewrite the objects holding their lines (manifests count them as ``forgotten``)
``warehouse``  every table holding their rows, one transaction (after the archive: a re-load of an
               hour then reads the rewritten objects and cannot bring the rows back)
``rebuild``    dbt rebuilds the derived aggregates from what is left
``verify``     scan every layer for anything left about them; anything found puts the erasing steps
               back to pending and fails the request, and a re-run erases again

Only one deletion runs at a time per environment (a Redis lock), because two could rewrite the same
manifest. The user id exists in memory and, while the request runs, in its work object
(:mod:`streaming.privacy.requests`); never in the audit record, a log line or an error message.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from streaming.archive.store import ArchiveStore
from streaming.privacy import suppression
from streaming.privacy.archive import ArchiveEraser
from streaming.privacy.deadletters import DeadLetterEraser
from streaming.privacy.requests import STEPS, Request, RequestStore, new_request_id, now_iso
from streaming.privacy.speed import SpeedEraser
from streaming.privacy.subject import Subject
from streaming.privacy.warehouse import WarehouseEraser
from streaming.speed import keys

log = logging.getLogger(__name__)

#: The suppression starts this long after the request: longer than writing the list takes, so an event
#: received at or after ``since_ms`` is processed by every layer after the list holds the subject
#: (each layer re-checks the list's version at the start of every batch), and all layers count alike.
SUPPRESS_MARGIN_MS = 2_000
LOCK_KEY = keys.privacy_lock()
#: The lock expires this long after its holder stops renewing it (a killed process), so a re-run can go on.
LOCK_TTL_S = 30
ERASING_STEPS = ("speed", "archive", "warehouse", "rebuild")


class DeletionBusy(RuntimeError):
    """Another deletion request is running in this environment."""


class DeletionIncomplete(RuntimeError):
    """The verify step found data about the subject left in a layer; re-run the request."""


@dataclass
class Eraser:
    """Everything a deletion touches. ``rebuild`` rebuilds the warehouse's derived models (None: skip)."""

    redis: Any
    store: ArchiveStore
    requests: RequestStore
    warehouse: WarehouseEraser | None
    rebuild: Callable[[list[str]], None] | None = None
    salt: str = ""
    #: test hook: called with a step's name after it is recorded (a test kills the run there)
    after_step: Callable[[str], None] | None = None
    lock_ttl_s: int = LOCK_TTL_S

    # -- entry points ---------------------------------------------------------------------------
    def create(self, tenant: str, user_id: str, requested_by: str = "cli") -> Request:
        """Record a deletion request (status pending) without running it; for a subject that has an
        unfinished request, that request. Run it with :meth:`resume` (the HTTP API and Dagster do)."""
        Subject(tenant, user_id)  # validates both
        subject_id = suppression.subject_hash(tenant, user_id, self.salt)
        for request in self.requests.requests(tenant):
            if request.subject == subject_id and request.status != "done":
                return request
        now_ms = int(time.time() * 1000)
        request = Request(new_request_id(), tenant, subject_id, now_ms + SUPPRESS_MARGIN_MS, now_iso(), requested_by)
        self.requests.save_work(tenant, request.request_id, {"user_id": user_id, "anonymous_ids": []})
        self.requests.save(request)
        log.info("deletion request %s for tenant %s recorded", request.request_id, tenant)
        return request

    def forget(self, tenant: str, user_id: str, requested_by: str = "cli") -> Request:
        """Record and run (or, for a subject with an unfinished request, resume) the deletion of ``user_id``."""
        return self.resume(self.create(tenant, user_id, requested_by))

    def resume(self, request: Request) -> Request:
        if request.status == "done":
            return request
        work = self.requests.load_work(request.tenant, request.request_id)
        if work is None:
            raise DeletionIncomplete(f"request {request.request_id} has no work record left; "
                                     "start a new request with `tally forget --tenant T --user U`")
        subject = Subject(request.tenant, work["user_id"], set(work.get("anonymous_ids", [])))
        return self._run(request, subject)

    def resume_all(self) -> list[Request]:
        return [self.resume(r) for r in self.requests.requests() if r.status != "done"]

    # -- the steps ------------------------------------------------------------------------------
    def _run(self, request: Request, subject: Subject) -> Request:
        with self._lock():
            request.status, request.error = "running", None
            self.requests.save(request)
            try:
                for name in STEPS:
                    if request.step(name)["status"] == "done":
                        continue
                    started = now_iso()
                    t0 = time.monotonic()
                    counts = getattr(self, f"_step_{name}")(request, subject)
                    request.steps[name] = {"status": "done", "started_at": started, "finished_at": now_iso(),
                                           "seconds": round(time.monotonic() - t0, 3), "counts": counts}
                    self.requests.save(request)
                    if self.after_step is not None:
                        self.after_step(name)
            except Exception as exc:
                request.status = "failed"
                # The type and a message tally wrote; neither ever carries the subject's identifiers.
                request.error = f"{type(exc).__name__}: {_safe_message(exc, subject)}"
                self.requests.save(request)
                raise
            request.status, request.finished_at = "done", now_iso()
            self.requests.save(request)
            self.requests.delete_work(request.tenant, request.request_id)
            log.info("deletion request %s for tenant %s done", request.request_id, request.tenant)
            return request

    def _step_discover(self, request: Request, subject: Subject) -> dict[str, Any]:
        scan = ArchiveEraser(self.store).discover(subject)
        found = set(scan.anonymous_ids)
        if self.warehouse is not None:
            found |= self.warehouse.discover(subject)
        subject.anonymous_ids |= found
        self.requests.save_work(request.tenant, request.request_id,
                                {"user_id": subject.user_id, "anonymous_ids": sorted(subject.anonymous_ids)})
        return {"anonymous_ids": len(subject.anonymous_ids), "archive_objects_read": scan.objects_read}

    def _step_suppress(self, request: Request, subject: Subject) -> dict[str, Any]:
        added = suppression.add(self.redis, request.tenant, subject.hashes(self.salt), request.since_ms)
        return {"subjects": len(subject.hashes(self.salt)), "added": added, "since_ms": request.since_ms}

    def _step_speed(self, request: Request, subject: Subject) -> dict[str, Any]:
        """Segments and dead letters: both Redis, both the speed layer's. Dead letters are part of this
        step rather than a step of their own so that STEPS, and with it every audit record already
        written, keeps its shape (a request recorded before this existed and resumed after its speed
        step is caught by ``verify``, which puts the step back to pending and a re-run erases them)."""
        result = SpeedEraser(self.redis).erase(subject)
        dead = DeadLetterEraser(self.redis).erase(subject)
        segments = {f"{k}_entries": n for k, n in result.entries_removed.items()}
        return {"keys_scanned": result.keys_scanned, **segments, "dead_letters_scanned": dead.entries_scanned,
                "dead_letters_removed": dead.removed}

    def _step_archive(self, request: Request, subject: Subject) -> dict[str, Any]:
        result = ArchiveEraser(self.store).erase(subject)
        merged: Counter[tuple[str, str, str]] = Counter({(t, e, m): n for t, e, m, n in request.forgotten})
        merged.update(result.forgotten)
        request.forgotten = [[t, e, m, n] for (t, e, m), n in sorted(merged.items())]
        return {"lines_removed": result.lines_removed, "objects_rewritten": result.objects_rewritten,
                "manifests_rewritten": result.manifests_rewritten, "old_objects_deleted": result.old_objects_deleted}

    def _step_warehouse(self, request: Request, subject: Subject) -> dict[str, Any]:
        if self.warehouse is None:
            return {"skipped": "no warehouse configured"}
        result = self.warehouse.erase(subject)
        return {"rows": result.total, "tables": result.rows_deleted}

    def _step_rebuild(self, request: Request, subject: Subject) -> dict[str, Any]:
        if self.rebuild is None or self.warehouse is None:
            return {"skipped": "no dbt rebuild configured"}
        models = self.warehouse.model_tables()
        self.rebuild(models)
        return {"models_rebuilt": len(models)}

    def _step_verify(self, request: Request, subject: Subject) -> dict[str, Any]:
        left = {
            "speed_entries": SpeedEraser(self.redis).count(subject),
            "speed_dead_letters": DeadLetterEraser(self.redis).count(subject),
            "archive_lines": ArchiveEraser(self.store).count(subject),
            "warehouse_rows": sum(self.warehouse.count(subject).values()) if self.warehouse is not None else 0,
        }
        if any(left.values()):
            for name in ERASING_STEPS:
                request.steps[name] = {"status": "pending"}
            raise DeletionIncomplete("data about the subject is still present ("
                                     + ", ".join(f"{k}={v}" for k, v in left.items()) + "); run the request again")
        return left

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One deletion at a time; renewed every third of its TTL while held, so a killed holder's lock
        lapses within ``lock_ttl_s``."""
        token = uuid.uuid4().hex
        if not self.redis.set(LOCK_KEY, token, nx=True, ex=self.lock_ttl_s):
            raise DeletionBusy("another deletion request is running in this environment; try again "
                               f"when it ends (or within {self.lock_ttl_s} s if it was killed)")
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.lock_ttl_s / 3):
                if self.redis.get(LOCK_KEY) in (token, token.encode()):
                    self.redis.expire(LOCK_KEY, self.lock_ttl_s)

        renewer = threading.Thread(target=renew, name="forget-lock", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()
            if self.redis.get(LOCK_KEY) in (token, token.encode()):
                self.redis.delete(LOCK_KEY)


def _safe_message(exc: BaseException, subject: Subject) -> str:
    """An error message with the subject's identifiers masked (a driver may quote a value)."""
    text = str(exc)[:500]
    for ident in sorted({subject.user_id, *subject.anonymous_ids}, key=len, reverse=True):
        if ident:
            text = text.replace(ident, "<redacted>")
    return text
