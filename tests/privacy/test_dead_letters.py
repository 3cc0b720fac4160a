"""Dead letters in a deletion: the speed layer's entries whose raw bytes name the subject are removed,
others (a similar id, the same id in another tenant) stay, counts per reason keep their totals.
Real redis-server and the AWS emulator (the archive holds the identify that links the anonymous id)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

import pytest
import redis

from streaming.archive.batch import build_batch, decode_lines
from streaming.archive.store import ArchiveStore
from streaming.events import EventDecoder, Rejection
from streaming.kinesis.processor import StreamRecord
from streaming.privacy.deadletters import DeadLetterEraser, DeadLetterMatcher, quoted_forms
from streaming.privacy.forget import DeletionIncomplete, Eraser
from streaming.privacy.requests import RequestStore
from streaming.privacy.subject import Subject
from streaming.speed import deadletters, keys
from streaming.speed.aggregate import DeadLetter, dead_letter
from streaming.speed.store import SpeedStore

pytestmark = pytest.mark.integration

T, USER, ANON = "t-dl", "u-123", "a-77"
S = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.timezone.utc)


def _doc(tenant: str, user: str | None, anon: str, **extra: Any) -> dict[str, Any]:
    at = S.isoformat().replace("+00:00", "Z")
    return {"event_id": str(uuid.uuid4()), "tenant_id": tenant, "event_type": "identify",
            "anonymous_id": anon, "user_id": user, "occurred_at": at, "received_at": at, "source_id": "src",
            "source_seq": 1, "properties": {}, "schema_version": 1, **extra}


#: Records that fail validation, by whether they are the subject's.
SUBJECTS = {
    "malformed_user": b'{"tenant_id": "t-dl", "user_id": "u-123", "event_type": "click"',
    "escaped_anon": b'{"tenant_id": "t-dl", "body": "{\\"anonymous_id\\": \\"a-77\\", \\"x\\": 1}"}',
    "single_quotes": b"{'tenant_id': 't-dl', 'user_id': 'u-123'}",
    "wrong_type": json.dumps(_doc(T, USER, "a-1", source_seq="seven")).encode(),
    "oversized": json.dumps(_doc(T, USER, "a-2", properties={"pad": "x" * 70_000})).encode(),
}
OTHERS = {
    "longer_id": b'{"tenant_id": "t-dl", "user_id": "u-1234"',
    "prefix_id": b'{"tenant_id": "t-dl", "anonymous_id": "a-7"',
    "other_tenant": b'{"tenant_id": "t-other", "user_id": "u-123"',
    # not a whole string: a documented limit
    "unquoted": b'{"tenant_id": "t-dl", "path": "/users/u-123/profile"',
}


def _letters(records: dict[str, bytes], shard: str) -> list[DeadLetter]:
    decoder = EventDecoder()
    out = []
    for seq, raw in enumerate(records.values(), start=1):
        rejection = decoder.decode(raw, S + dt.timedelta(days=1))
        assert isinstance(rejection, Rejection), raw[:80]
        out.append(dead_letter(StreamRecord(shard, str(seq), "pk", raw, S.timestamp()), rejection))
    return out


def _seed(redis_client: redis.Redis, s3: Any, bucket: str) -> None:
    """The identify in the archive (so ``discover`` links ANON), the dead letters in Redis: the subject's,
    the others, and 1,000 of another tenant so the entries hash is scanned over many HSCAN pages."""
    identify = StreamRecord("shardId-0", "1", ANON, json.dumps(_doc(T, USER, ANON)).encode(), S.timestamp())
    ArchiveStore(s3, bucket).write_batch(build_batch("shardId-0", [identify], EventDecoder(),
                                                     future_limit=S + dt.timedelta(days=1)))
    store = SpeedStore(redis_client, "speed")
    filler = {f"f{i}": f'{{"tenant_id": "t-other", "user_id": "u-{i}"'.encode() for i in range(1000)}
    for shard, records in (("shardId-1", SUBJECTS), ("shardId-2", OTHERS), ("shardId-3", filler)):
        assert store.write_dead_letters(_letters(records, shard), int(S.timestamp() * 1000)) == len(records)
    # One of the subject's entries already replayed: out of the pending set, still in the entries hash.
    assert dead_letter_of(redis_client, "shardId-1/1").tag == keys.UNATTRIBUTED_TAG  # invalid JSON: no tenant
    assert dead_letter_of(redis_client, "shardId-1/2").tag == T
    redis_client.zrem(keys.dead_letter_pending(keys.UNATTRIBUTED_TAG), "shardId-1/1")


def dead_letter_of(redis_client: redis.Redis, entry_id: str) -> Any:
    """The entry wherever its tag put it (pending or not)."""
    for tag in deadletters.tags(redis_client):
        blob = redis_client.hget(keys.dead_letter_entries(tag), entry_id)
        if blob is not None:
            return deadletters._entry(tag, entry_id, blob)
    return None


def _entry_ids(redis_client: redis.Redis) -> set[str]:
    return {k.decode() for tag in deadletters.tags(redis_client)
            for k in redis_client.hkeys(keys.dead_letter_entries(tag))}


def _eraser(redis_client: redis.Redis, s3: Any, bucket: str) -> Eraser:
    return Eraser(redis=redis_client, store=ArchiveStore(s3, bucket), requests=RequestStore(s3, bucket),
                  warehouse=None)


def test_quoted_forms_are_whole_strings() -> None:
    assert quoted_forms("u-1") == {b'"u-1"', b'\\"u-1\\"', b"'u-1'"}
    assert b'"\\u00e9t\\u00e9"' in quoted_forms("été") and '"été"'.encode() in quoted_forms("été")
    match = DeadLetterMatcher.for_subject(Subject(T, "u-1")).matches
    assert match(b'{"tenant_id":"t-dl","user_id":"u-1"}')
    assert not match(b'{"tenant_id":"t-dl","user_id":"u-12"}')
    assert not match(b'{"tenant_id":"t-dl","u":"xu-1"}')
    assert not match(b'{"tenant_id":"t-dl2","user_id":"u-1"}')  # the tenant is quoted too: no prefix match


def test_forget_removes_the_subjects_dead_letters_only(redis_client: redis.Redis, s3: Any,
                                                       bucket: str) -> None:
    _seed(redis_client, s3, bucket)
    before_counts = deadletters.counts(redis_client)
    assert set(before_counts) >= {"invalid_json", "wrong_type", "oversized", "missing_field"}
    subject_ids = {f"shardId-1/{i}" for i in range(1, len(SUBJECTS) + 1)}
    assert subject_ids <= _entry_ids(redis_client)

    eraser = _eraser(redis_client, s3, bucket)
    request = eraser.forget(T, USER)
    assert request.status == "done", request.to_json()
    assert request.steps["discover"]["counts"]["anonymous_ids"] == 1
    left = _entry_ids(redis_client)
    assert left & subject_ids == set()
    assert {f"shardId-2/{i}" for i in range(1, len(OTHERS) + 1)} <= left and len(left) == len(OTHERS) + 1000
    pending = {k.decode() for tag in deadletters.tags(redis_client)
               for k in redis_client.zrange(keys.dead_letter_pending(tag), 0, -1)}
    assert pending == left
    assert deadletters.counts(redis_client) == before_counts  # aggregates keep their totals

    # The audit record (as stored) holds the number and no identifier; verify found nothing left.
    stored = eraser.requests.load(T, request.request_id)
    assert stored.steps["speed"]["counts"]["dead_letters_removed"] == len(SUBJECTS)
    assert stored.steps["verify"]["counts"]["speed_dead_letters"] == 0
    audit = json.dumps(stored.to_json())
    assert USER not in audit and ANON not in audit

    # Again: a new request that removes nothing and changes nothing.
    again = _eraser(redis_client, s3, bucket).forget(T, USER)
    assert again.status == "done" and again.request_id != request.request_id
    assert again.steps["speed"]["counts"]["dead_letters_removed"] == 0
    assert _entry_ids(redis_client) == left and deadletters.counts(redis_client) == before_counts


def test_a_request_recorded_before_dead_letters_were_erased_finishes_on_a_rerun(
        redis_client: redis.Redis, s3: Any, bucket: str) -> None:
    """An audit record whose speed step finished without dead letters (the old shape) still loads and
    resumes: verify finds the dead letters, puts the erasing steps back, and the next run removes them."""
    _seed(redis_client, s3, bucket)
    eraser = _eraser(redis_client, s3, bucket)
    request = eraser.create(T, USER)
    old = request.to_json()
    old["steps"] = {"speed": {"status": "done", "started_at": "2026-11-01T00:00:00.000Z",
                              "finished_at": "2026-11-01T00:00:01.000Z", "seconds": 1.0,
                              "counts": {"keys_scanned": 0, "seg_entries": 0, "segst_entries": 0}}}
    s3.put_object(Bucket=bucket, Key=RequestStore.audit_key(T, request.request_id),
                  Body=json.dumps(old).encode())
    loaded = eraser.requests.load(T, request.request_id)
    with pytest.raises(DeletionIncomplete, match="speed_dead_letters=5"):
        eraser.resume(loaded)
    failed = eraser.requests.load(T, request.request_id)
    assert failed.status == "failed" and failed.steps["speed"]["status"] == "pending"
    done = eraser.resume(failed)
    assert done.status == "done" and done.steps["speed"]["counts"]["dead_letters_removed"] == len(SUBJECTS)
    assert DeadLetterEraser(redis_client).count(Subject(T, USER, {ANON})) == 0


def test_the_archive_keeps_rejected_lines_naming_the_subject(redis_client: redis.Redis, s3: Any,
                                                             bucket: str) -> None:
    """A documented limit (README, Privacy): the archive step rewrites valid events only. A rejected record
    is archived base64-encoded with its reason, counted per reason in the manifest (which the warehouse's
    raw-count check compares with ``raw.dead_letters``), so it survives a deletion. When that changes,
    this test changes with it."""
    rejected = StreamRecord("shardId-0", "2", ANON, SUBJECTS["malformed_user"], S.timestamp())
    identify = StreamRecord("shardId-0", "1", ANON, json.dumps(_doc(T, USER, ANON)).encode(), S.timestamp())
    store = ArchiveStore(s3, bucket)
    store.write_batch(build_batch("shardId-0", [identify, rejected], EventDecoder(),
                                  future_limit=S + dt.timedelta(days=1)))
    request = _eraser(redis_client, s3, bucket).forget(T, USER)
    assert request.status == "done" and request.steps["archive"]["counts"]["lines_removed"] == 1
    manifests = [store.read_manifest(k) or {} for k in store.manifest_keys("shardId-0")]
    (key,) = [o["key"] for m in manifests for o in m["objects"]]
    lines = list(decode_lines(store.read_object(key)))
    assert [line.reason for line in lines] == ["invalid_json"]
    assert b'"u-123"' in base64.b64decode(lines[0].data_b64 or "")
