"""The C fast-path scanner (``_native.scan``) against the event contract's reference decoder.

The scanner reads event records without msgspec and may decline any record (declined records take the
msgspec path), but it must be *sound*: every record it accepts is one :class:`EventDecoder` accepts, with
the same tenant, event type, anonymous id, ``received_at`` (epoch microseconds), ``event_id`` and wanted
property values. And it must accept every valid record of the project's own traffic generator, else the
fast path is pointless. The fuzz builds thousands of tricky variants of a few valid events (timestamps,
UUIDs, ids, tenants, numbers, escapes, duplicate keys, whitespace, broken UTF-8, truncation, byte flips:
:mod:`tests.speed.variants`) and checks soundness on each.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from streaming.events import DEFAULT_MAX_EVENT_BYTES, REASONS, Event, EventDecoder, Rejection
from streaming.generator import GeneratorConfig
from streaming.kinesis.processor import StreamRecord
from streaming.speed import aggregate
from tests.speed.variants import EPOCH, ETYPES, LIMIT_US, MAX_US, US, fuzz_corpus, generated

pytestmark = pytest.mark.unit

WANTED = ("path", "element")

GEN_CONFIG = GeneratorConfig(seed=3, tenants=5, duration_s=5, rate_per_s=1000, duplicate_rate=0.01,
                             malformed_rate=0.02, late_rate=0.01, late_delay_s=(1, 3))
GEN_LIMIT_US = ((dt.datetime.fromisoformat(GEN_CONFIG.start.replace("Z", "+00:00")) - EPOCH) // US
                + 86_400 * 1_000_000)  # a day after the run starts: nothing valid is in the future


# -- running the scanner and the reference ------------------------------------------------------------

def _native() -> Any:
    """The C extension; a missing build or a missing ``scan`` fails (``make install`` always builds it)."""
    native = aggregate._native
    assert native is not None, "streaming.speed._native is not built (aggregate._native is None)"
    assert hasattr(native, "scan"), f"streaming.speed._native has no scan(): {sorted(dir(native))}"
    return native


def _records(datas: Sequence[bytes]) -> list[StreamRecord]:
    return [StreamRecord("shardId-000000000000", str(i + 1), "pk", d, 0.0) for i, d in enumerate(datas)]


def _expected(event: Event, wanted: tuple[str, ...]) -> tuple[Any, ...]:
    return (event.tenant_id, ETYPES.index(event.event_type.value), event.anonymous_id,
            (event.received_at - EPOCH) // US, event.event_id.bytes, tuple(event.properties.get(k) for k in wanted))


def _reference_outcome(data: bytes, max_bytes: int, limit_us: int) -> Event | Rejection:
    return EventDecoder(max_bytes=max_bytes).decode(data, EPOCH + dt.timedelta(microseconds=limit_us))


def _reference(datas: Sequence[bytes], max_bytes: int, limit_us: int, wanted: tuple[str, ...]) -> list[tuple[Any, ...] | None]:
    """Per record: the tuple scan must give when it accepts, or None when the contract rejects it."""
    decoder = EventDecoder(max_bytes=max_bytes)
    limit = EPOCH + dt.timedelta(microseconds=limit_us)
    out: list[tuple[Any, ...] | None] = []
    for data in datas:
        result = decoder.decode(data, limit)
        out.append(_expected(result, wanted) if isinstance(result, Event) else None)
    return out


def _entry_problem(got: Any, n_wanted: int) -> str | None:
    """What is wrong with the shape or types of an entry, or None (``==`` alone would let a bytearray,
    a bool or a list through)."""
    if type(got) is not tuple or len(got) != 6:
        return f"entry is {type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}, not a 6-tuple"
    tenant, etype, anon, received, event_id, values = got
    for name, value, kind in (("tenant_id", tenant, str), ("etype_index", etype, int), ("anonymous_id", anon, str),
                              ("received_us", received, int), ("event_id", event_id, bytes), ("wanted_values", values, tuple)):
        if type(value) is not kind:
            return f"{name} is {type(value).__name__}, not {kind.__name__}"
    if len(event_id) != 16:
        return f"event_id has {len(event_id)} bytes"
    if len(values) != n_wanted or any(v is not None and type(v) is not str for v in values):
        return f"wanted_values {values!r} is not {n_wanted} str-or-None"
    return None


@dataclass
class Run:
    datas: list[bytes]
    max_bytes: int
    limit_us: int
    wanted: tuple[str, ...]
    want: list[tuple[Any, ...] | None]  # the reference's tuple, None when it rejects
    declined: list[int]
    got: dict[int, Any]  # scan.entry(i) for every accepted i

    @property
    def accepted(self) -> list[int]:
        return sorted(self.got)

    def unsound(self, skip_tenants: frozenset[str] = frozenset()) -> list[int]:
        """Accepted records the contract rejects, or with other values (or a malformed entry)."""
        bad = []
        for i, got in self.got.items():
            want = self.want[i]
            if (want is None or isinstance(got, BaseException) or _entry_problem(got, len(self.wanted))
                    or got != want or want[0] in skip_tenants):
                bad.append(i)
        return sorted(bad)

    def describe(self, indices: Sequence[int], limit: int = 12) -> str:
        """The offending records, shortest first, with what scan and the reference said."""
        lines = []
        for i in sorted(indices, key=lambda i: (len(self.datas[i]), i))[:limit]:
            ref = _reference_outcome(self.datas[i], self.max_bytes, self.limit_us)
            if isinstance(ref, Event):
                ref_text = f"Event {self.want[i]!r}"
            elif isinstance(ref, Rejection):
                ref_text = f"Rejection {ref.reason.value}: {ref.detail}"
            else:
                ref_text = f"raised {ref!r} (msgspec refused it)"
            got = self.got.get(i, "declined")
            problem = _entry_problem(got, len(self.wanted)) if i in self.got and not isinstance(got, BaseException) else None
            lines.append(f"  [{i}] record={self.datas[i]!r}\n      scan: {got!r}{f' ({problem})' if problem else ''}\n"
                         f"      reference: {ref_text}")
        more = f"\n  ... and {len(indices) - limit} more" if len(indices) > limit else ""
        return (f"(max_bytes={self.max_bytes}, limit_us={self.limit_us}, wanted={self.wanted})\n"
                + "\n".join(lines) + more)


def _run(datas: Sequence[bytes], max_bytes: int, limit_us: int, wanted: tuple[str, ...] = WANTED,
         skip_tenants: set[str] | None = None) -> Run:
    datas = list(datas)
    native = _native()
    result = native.scan(_records(datas), max_bytes, limit_us, ETYPES, wanted, set(skip_tenants or ()))
    assert type(result) is tuple and len(result) == 2, f"scan() returned {type(result).__name__}, not (scan, declined)"
    scan, declined = result
    assert type(declined) is list, f"declined is {type(declined).__name__}, not list"
    assert all(type(i) is int for i in declined), f"declined holds non-ints: {declined[:20]!r}"
    assert all(a < b for a, b in zip(declined, declined[1:])), f"declined not strictly ascending: {declined[:50]!r}"
    assert not declined or (declined[0] >= 0 and declined[-1] < len(datas)), \
        f"declined index out of range 0..{len(datas) - 1}: {declined[:5]!r}...{declined[-5:]!r}"
    declined_set = set(declined)
    got: dict[int, Any] = {}
    for i in range(len(datas)):
        if i not in declined_set:
            try:
                got[i] = scan.entry(i)
            except Exception as exc:  # noqa: BLE001 - reported as an unsound entry
                got[i] = exc
    return Run(datas, max_bytes, limit_us, wanted, _reference(datas, max_bytes, limit_us, wanted), declined, got)


def _assert_sound(run: Run, skip_tenants: frozenset[str] = frozenset()) -> None:
    bad = run.unsound(skip_tenants)
    assert not bad, f"scan accepted {len(bad)} record(s) the contract rejects or reads differently " \
                    f"{run.describe(bad)}"


def _assert_exact(run: Run, skip_tenants: frozenset[str] = frozenset()) -> None:
    """Sound, and declines exactly the records the contract rejects (plus skipped tenants)."""
    _assert_sound(run, skip_tenants)
    missed = [i for i in run.declined if run.want[i] is not None and run.want[i][0] not in skip_tenants]
    assert not missed, f"scan declined {len(missed)} valid record(s) the fast path must take " \
                       f"{run.describe(missed)}"
    expected = [i for i, w in enumerate(run.want) if w is None or w[0] in skip_tenants]
    assert run.declined == expected




# -- 1. the generator's traffic ------------------------------------------------------------------------

def test_every_valid_generated_event_takes_the_fast_path() -> None:
    datas, kinds, reasons = generated(GEN_CONFIG)
    # The run holds valid, duplicate, late and malformed records of every rejection reason.
    assert set(kinds) == {"valid", "duplicate", "late", "malformed"}
    assert {r for r in reasons if r} == set(REASONS)

    run = _run(datas, DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US)
    # The test's own premise: the reference accepts exactly the records the generator meant to be valid.
    assert [w is not None for w in run.want] == [k != "malformed" for k in kinds]
    _assert_exact(run)
    assert len(run.accepted) == sum(k != "malformed" for k in kinds)

    # The clock limit on the same traffic, set exactly at a received_at several records share: those
    # records are accepted, the ones 1 ms later (the generator's resolution) are declined.
    stamps = sorted(w[3] for w in run.want if w is not None)
    counts = Counter(stamps)
    cut = next(s for s in stamps[len(stamps) // 2:] if counts[s] >= 2 and counts.get(s + 1000, 0) >= 1)
    at_cut = _run(datas, DEFAULT_MAX_EVENT_BYTES, cut)
    _assert_exact(at_cut)
    assert sum(1 for w in at_cut.want if w is not None and w[3] == cut) >= 2
    assert any(run.want[i] is not None and run.want[i][3] > cut for i in at_cut.declined)

    # Other wanted keys (and none) on the same traffic.
    for wanted in ((), ("element",), ("form", "path", "referrer", "name")):
        _assert_exact(_run(datas, DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US, wanted))


# -- 2. the fuzz ---------------------------------------------------------------------------------------

SETTINGS = [  # (max_bytes, limit_us, wanted)
    (4096, LIMIT_US, WANTED),
    (1000, LIMIT_US - 1, ()),
    (DEFAULT_MAX_EVENT_BYTES, MAX_US, ("element", "name", "path", "referrer")),
    (700, (dt.datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone.utc) - EPOCH) // US, ("path",)),
]


def test_scan_accepts_only_what_the_contract_accepts_with_the_same_values() -> None:
    corpus = fuzz_corpus([s[0] for s in SETTINGS if s[0] < 10_000])
    assert len(corpus) > 5000
    report = []
    for n, (max_bytes, limit_us, wanted) in enumerate(SETTINGS):
        run = _run(corpus, max_bytes, limit_us, wanted)
        _assert_sound(run)
        accepted, declined = len(run.accepted), len(run.declined)
        valid = sum(w is not None for w in run.want)
        report.append(f"max_bytes={max_bytes} limit_us={limit_us}: {len(corpus)} variants, reference accepts "
                      f"{valid}, scan accepts {accepted}, declines {declined}")
        if n < 3:  # (the last setting's clock is in year 1: almost everything is in its future)
            # Both sides exercised: the contract accepts many variants and rejects many, and so does scan.
            assert valid > 200 and len(corpus) - valid > 1000, report[-1]
            assert accepted > 0 and declined > 0, report[-1]
    # The same corpus in small batches (state carried between records must not change a verdict's soundness).
    rng = random.Random(7)
    i = 0
    while i < len(corpus):
        n = rng.choice((1, 2, 3, 17, 64, 300))
        _assert_sound(_run(corpus[i:i + n], *SETTINGS[0]))
        i += n
    print("\n".join(report))


# -- 3. skipped tenants and the declined list ---------------------------------------------------------

def test_skip_tenants_are_declined() -> None:
    datas, kinds, _ = generated(GeneratorConfig(seed=5, tenants=5, duration_s=2, rate_per_s=500, malformed_rate=0.02,
                                                 duplicate_rate=0.01))
    tenants = sorted({json.loads(d)["tenant_id"] for d, k in zip(datas, kinds) if k != "malformed"})
    assert len(tenants) >= 3
    skip = {tenants[0], tenants[2], "not-a-tenant-in-this-batch"}
    # The skipped tenant spelt with an escape, and as the last of two tenant_id keys: the contract reads
    # it as the skipped tenant, so scan must decline these too.
    doc = json.loads(next(d for d, k in zip(datas, kinds) if k == "valid"))
    doc["tenant_id"] = tenants[0]
    plain = json.dumps(doc, separators=(",", ":"))
    tricky = [
        plain.replace(f'"tenant_id":"{tenants[0]}"', '"tenant_id":"\\u00' + "%02x" % ord(tenants[0][0]) + tenants[0][1:] + '"'),
        plain.replace(f'"tenant_id":"{tenants[0]}"', f'"tenant_id":"{tenants[1]}","tenant_id":"{tenants[0]}"'),
        plain.replace('"tenant_id"', '"\\u0074enant_id"'),
        plain.replace(f'"tenant_id":"{tenants[0]}"', f'"tenant_id":"{tenants[0]}","\\u0074enant_id":"{tenants[2]}"'),
        plain.replace(f'"tenant_id":"{tenants[0]}"', f'"tenant_id":"{tenants[0]}","tenant_id":"{tenants[1]}"'),
    ]
    all_datas = datas + [t.encode() for t in tricky]
    want_tenants = [json.loads(t)["tenant_id"] if isinstance(_reference_outcome(t.encode(), DEFAULT_MAX_EVENT_BYTES,
                                                                                 GEN_LIMIT_US), Event) else None
                    for t in tricky]
    assert want_tenants == [tenants[0], tenants[0], tenants[0], tenants[2], tenants[1]]  # the premise

    run = _run(all_datas, DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US, WANTED, skip)
    _assert_sound(run, frozenset(skip))
    # Exact on the generator's records: every valid one of another tenant is accepted, the rest declined.
    gen_declined = [i for i in run.declined if i < len(datas)]
    assert gen_declined == [i for i, w in enumerate(run.want[:len(datas)]) if w is None or w[0] in skip]
    assert any(w is not None and w[0] in skip for w in run.want)
    assert any(w is not None and w[0] not in skip for w in run.want)

    # Skipping nobody declines only the invalid; skipping every tenant declines everything.
    _assert_exact(_run(datas, DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US, WANTED, set()))
    everyone = _run(datas, DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US, WANTED, set(tenants))
    assert everyone.declined == list(range(len(datas)))


def test_declined_indices_are_ascending_and_exact() -> None:
    datas, kinds, _ = generated(GeneratorConfig(seed=11, tenants=3, duration_s=1, rate_per_s=400))
    valid = [d for d, k in zip(datas, kinds) if k == "valid"]
    rng = random.Random(11)
    invalid = [
        valid[0][:-1], valid[1] + b"x", valid[2].replace(b'"schema_version":1', b'"schema_version":2'),
        valid[3].replace(b'"tenant_id":"', b'"tenant_id":"X'), valid[4].replace(b'"received_at":"2026', b'"received_at":"2099'),
        valid[5].replace(b'"event_type":"', b'"event_type":"x'), valid[6].replace(b'"source_seq":', b'"source_seq":-'),
        valid[7].replace(b'"event_id":"', b'"event_id":"x'), b"", b"{}", b"null", b"\xff",
        valid[8][:-1] + b',"properties":{"x":"' + b"y" * DEFAULT_MAX_EVENT_BYTES + b'"}}',
    ]
    pattern: list[bytes] = []
    expect_declined: list[int] = []

    def add(data: bytes, bad: bool) -> None:
        if bad:
            expect_declined.append(len(pattern))
        pattern.append(data)

    add(invalid[0], True)  # the first record declined
    for v in valid[9:]:
        add(v, False)
        if rng.random() < 0.15:
            for _ in range(rng.choice((1, 1, 2, 5))):  # single declines and runs of them
                add(rng.choice(invalid), True)
    add(invalid[1], True)  # the last record declined
    run = _run(pattern, DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US)
    assert all(run.want[i] is None for i in expect_declined)  # the premise: the reference rejects those
    _assert_exact(run)
    assert run.declined == expect_declined

    # Edge batches: empty, all accepted, all declined, one of each.
    assert _run([], DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US).declined == []
    assert _run(valid[:50], DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US).declined == []
    assert _run(invalid, DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US).declined == list(range(len(invalid)))
    assert _run([valid[0]], DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US).declined == []
    assert _run([invalid[0]], DEFAULT_MAX_EVENT_BYTES, GEN_LIMIT_US).declined == [0]

    # max_bytes exactly at a generated record's length (accepted) with others one byte longer (declined).
    lengths = Counter(len(v) for v in valid)
    size = next(n for n in sorted(lengths) if lengths.get(n + 1))
    sized = _run(valid, size, GEN_LIMIT_US)
    _assert_exact(sized)
    assert sized.declined == [i for i, v in enumerate(valid) if len(v) > size]
    assert any(len(valid[i]) == size for i in sized.accepted)
    assert any(len(valid[i]) == size + 1 for i in sized.declined)
