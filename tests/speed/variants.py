"""Records for fuzzing the C scanner: thousands of tricky variants of a few valid events.

Timestamps, UUIDs, ids, tenants, numbers, escapes, duplicate keys, whitespace, broken UTF-8, truncation and
byte flips, plus near-valid edits of plain records and records padded to exact sizes. Deterministic (fixed
seeds), so a failure in ``tests/speed/test_scan.py`` reproduces. The verdict on each record is the event
contract's (:class:`streaming.events.EventDecoder`), never this module's.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from streaming.events import EventType
from streaming.generator import GeneratorConfig, TrafficGenerator

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
US = dt.timedelta(microseconds=1)
ETYPES: tuple[str, ...] = tuple(t.value for t in EventType)

#: The fuzz's clock: received_at at or before this instant passes the future check, 1 us later fails.
LIMIT = dt.datetime(2026, 1, 1, 0, 5, 0, 123456, tzinfo=dt.timezone.utc)
LIMIT_US = (LIMIT - EPOCH) // US
MAX_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc) - EPOCH) // US


def generated(config: GeneratorConfig) -> tuple[list[bytes], list[str], list[str | None]]:
    """(records, kinds, rejection reasons) of one generator run."""
    gen = TrafficGenerator(config)
    datas, kinds, reasons = [], [], []
    for record in gen.records():
        datas.append(record.data)
        kinds.append(record.kind)
        reasons.append(record.reason)
    return datas, kinds, reasons



def _js(value: str) -> str:
    """A JSON string literal with non-ASCII characters as raw UTF-8."""
    return json.dumps(value, ensure_ascii=False)


def _ja(value: str) -> str:
    """A JSON string literal with non-ASCII characters as \\u escapes (surrogate pairs above U+FFFF)."""
    return json.dumps(value)


#: Raw bytes that are not valid UTF-8, carried in str as surrogateescape code points (encoded at the end).
BAD_UTF8 = ["\udcff", "\udcc3", "\udcc0\udc80", "\udced\udca0\udc80", "\udcf4\udc90\udc80\udc80", "\udce2\udc82",
            "\udcf8\udc88\udc80\udc80\udc80", "\udc80", "\udce0\udc80\udc80"]
GOOD_MULTIBYTE = ["é", "\u0800", "\uffff", "\U0010ffff", "😀", "日本", "\u2028"]

_ID_STRINGS = ["a", "", "anon-1", "x" * 127, "x" * 128, "x" * 129, "é" * 128, "é" * 129, "😀" * 128, "😀" * 129,
               "日本", "a b", 'a"b', "a\\b", "a/b", "a\nb", "\x7f", "a\u2028b", "\U0010ffff", "\x00"]
ID_TEXTS = ([_js(s) for s in _ID_STRINGS] + [_ja(s) for s in _ID_STRINGS if not s.isascii()] + [
    '"\\u00e9"', '"a\\/b"', '"\\b\\f\\n\\r\\t"', '"\\u0000"', '"\\ud800"', '"\\udc00"', '"\\ud83d\\ude00"',
    '"\\ud83d"', '"\\ud83dx"', '"\\ud83d\\u0041"', '"\\uDBFF\\uDFFF"', '"\\x41"', '"\\u12"', '"\\u12g4"',
    '"\\U0041"', '"\\a"', '"\\\'"', '"a\x01b"', '"a\tb"', '"a\nb"', '"a\x1fb"', '"\\"', '"abc', "1", "1.5", "null",
    "true", "false", "[]", "{}", '["a"]', '"' + "\\u0078" * 128 + '"', '"' + "\\u0078" * 129 + '"',
    '"' + "\\ud83d\\ude00" * 128 + '"', '"' + "\\ud83d\\ude00" * 129 + '"', '"' + "x" * 127 + '\\n"',
    '"' + "x" * 128 + '\\n"', '"' + "é" * 127 + '\\u00e9"', '"' + "\\\\" * 128 + '"', '"' + "\\\\" * 129 + '"',
] + ['"a' + b + 'b"' for b in BAD_UTF8] + ['"' + "x" * 127 + b + '"' for b in BAD_UTF8[:3]])

_TENANT_STRINGS = ["acme", "a", "0", "9lives", "tenant-001", "a" * 64, "a" * 65, "z" + "_-9" * 21, "z" + "_-9" * 21 + "x",
                   "Acme", "ACME", "acmE", "-acme", "_acme", "acme-", "acme_", "ac me", "acme\n", "acme\r", "\nacme",
                   "acme\x00", "", "é", "acmé", "١٢", "a{b}", "a:b", "a.b", "a/b", "a\\b", 'a"b', "acme ", "a\tb"]
TENANT_TEXTS = ([_js(s) for s in _TENANT_STRINGS] + [_ja(s) for s in _TENANT_STRINGS if not s.isascii()] + [
    '"\\u0061cme"', '"acm\\u0065"', '"a\\u002db"', '"a\\/b"', '"acme\\n"', '"acme\\r"', '"\\u0041cme"',
    '"acme\\u0000"', '"acme\\t"', '"' + "a" * 63 + '\\u0061"', '"' + "a" * 64 + '\\u0061"', "null", "1", '["acme"]',
    "{}", "true", '"acme', '"\\ud800"', '"acme\\u000a"', '"acme\\u2028"', '"tenant\\u002d001"',
] + ['"ac' + b + 'me"' for b in BAD_UTF8[:4]])

ETYPE_TEXTS = [_js(t) for t in ETYPES] * 3 + [
    '"PAGE_VIEW"', '"Page_view"', '"page_view "', '" page_view"', '"pageview"', '"page-view"', '""',
    '"purchase_completed"', '"page\\u005fview"', '"\\u0063lick"', '"click\\u0000"', '"click\\n"', "null", "0", "1",
    '["click"]', '{"click":1}', '"identify\\u0020"', '"custo"', '"customs"', '"cl\\u0069ck"', '"\\u0069dentify"',
    '"form_submit\x00"', '"click' + BAD_UTF8[0] + '"',
]

SEQ_TEXTS = ["0", "-0", "1", "17", "01", "00", "1.0", "1e2", "1E2", "1e+2", "-1", "-0.0", "0.0", "9223372036854775807",
             "9223372036854775808", "-9223372036854775808", "18446744073709551615", "18446744073709551616",
             "99999999999999999999999999999", "1e400", '"1"', "null", "true", "false", "[]", "{}", "- 1", "+1", "0x10",
             "NaN", "Infinity", "1.", ".5", "-", "1 2", "12345678901234567890123456789012345678901234567890"]

SV_TEXTS = ["1"] * 6 + ["1.0", "2", "0", "-1", '"1"', "null", "true", "1e0", "01", "-0", "10", "11", "1.5",
                        "4294967297", "18446744073709551617", "-18446744073709551615", "1E0", "[1]", "+1"]

UNKNOWN_KEYS = ['"extra"', '"Tenant_id"', '"event_id "', '""', '"é"', '"eventId"', '"properties_"', '"received"',
                '"schema"', '"\\u00e9"', '"ex\\"tra"', '"e' + BAD_UTF8[0] + '"', '"user"', '"received_at\\n"']

SCALARS = ["0", "-0", "1", "-1", "1.5", "-1.5e-7", "1E5", "1e+5", "12345678901234567890123", "1e400", "-1e400",
           "true", "false", "null", '""', '"x"', '"\\u00e9"', '"😀"', '"\\ud83d\\ude00"', '"a\\"b\\\\"', '"\\/"',
           '"a' + BAD_UTF8[0] + '"', '"\x7f"', '"}"', '"]"', '"{"', '","', '":"', '"\\\\"', '"\\\\\\""',
           '"' + "y" * 300 + '"', "0.000001", "-0.0", "2.5e-308", "1.7976931348623157e308"]
BAD_JSON = ["01", "1.", ".5", "-", "+1", "tru", "nul", "NaN", "Infinity", '"\\x"', "'a'", "[1,]", '{"a"}',
            '{"a":1,}', "[1 2]", "{1:2}", '"\\ud800"', '"a\x01"', '"\\u12"', "[", "{", '"', "]", "}", "1e", "-e1",
            "0e", "1.e5", "--1", "[,]", '{"a":}', "True", "None"]

PROP_KEYS = ['"path"'] * 4 + ['"element"'] * 3 + ['"name"', '"referrer"', '"form"', '"traits"', '"\\u0070ath"',
                                                  '"pat\\u0068"', '"elem\\u0065nt"', '"PATH"', '"path "', '""', '"é"',
                                                  '"\\ud800"', '"pa\\"th"', '"path\\u0000"', '"path' + BAD_UTF8[0] + '"']
WANTED_VALUE_TEXTS = [
    '"/pricing"', '"/pricing"', '""', '"cta-start-trial"', '"/a\\"b"', '"\\u002fpricing"', '"\\/pricing"', '"é"',
    '"\\u00e9"', '"😀"', '"\\ud83d\\ude00"', '"\\ud800"', '"\\ud83d"', '"\\udc00"', '"' + "x" * 300 + '"',
    '"a\\u0000b"', '"a\x01b"', '"a\\nb\\tc\\\\"', '"\\b\\f\\r"', '"\x7f"', '"\u2028"', '"\U0010ffff"', "0", "-0",
    "1.5", "-1", "1e400", "12345678901234567890", "true", "false", "null", "null", "{}", "[]", '{"path":"/x"}',
    '["/x"]', '"\\x"', '"unterminated', '"\\u0022"', '"\\\\u0022"', '"a' + BAD_UTF8[1] + '"',
    '"a' + BAD_UTF8[3] + '"', '"' + "é" * 200 + '"', '"\\uFFFF"', '"\\uD83D\\uDE00"',
]


def _any_json(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if r < 0.04:
        return rng.choice(BAD_JSON)
    if depth >= 3 or r < 0.55:
        return rng.choice(SCALARS)
    if r < 0.6:
        n = rng.choice((20, 60, 120))
        return "[" * n + rng.choice(("", "1", '{"path":"/deep"}')) + "]" * n
    if r < 0.8:
        return "[" + ",".join(_any_json(rng, depth + 1) for _ in range(rng.randrange(5))) + "]"
    items = [f"{rng.choice(PROP_KEYS + UNKNOWN_KEYS)}:{_any_json(rng, depth + 1)}" for _ in range(rng.randrange(5))]
    return "{" + ",".join(items) + "}"


def _props_text(rng: random.Random, ws: Callable[[], str]) -> str:
    if rng.random() < 0.12:
        return rng.choice(["null", "[]", "{}", '"x"', "1", "true", '[{"path":"/x"}]', '{"path":"/x",}', '{"path"}',
                           '{path:"/x"}', '{"path":"/x"', '{"path" "/x"}', '{,"path":"/x"}', '{"path":"/x"}}'])
    items = []
    for _ in range(rng.randrange(6)):
        key = rng.choice(PROP_KEYS)
        value = rng.choice(WANTED_VALUE_TEXTS) if rng.random() < 0.6 else _any_json(rng, 1)
        items.append(f"{ws()}{key}{ws()}:{ws()}{value}{ws()}")
    return "{" + ",".join(items) + ws() + "}"


_OFFSETS_MIN = [0, 0, 0, 0, 90, -90, 60, -330, 23 * 60 + 59, -(23 * 60 + 59), 1, -1]


def _render(instant: dt.datetime, rng: random.Random) -> str:
    """An RFC 3339 rendering of a UTC instant, in a random (valid) offset, separator and precision."""
    offset = rng.choice(_OFFSETS_MIN)
    try:
        local = instant + dt.timedelta(minutes=offset)
    except OverflowError:
        offset, local = 0, instant
    micro = f"{local.microsecond:06d}"
    style = rng.randrange(5)
    if style == 0 and local.microsecond == 0:
        frac = rng.choice(["", ".0", ".000", ".000000000"])
    elif style == 1:
        frac = "." + micro + "0" * rng.randrange(1, 4)
    elif style == 2:
        frac = "." + micro.rstrip("0") if micro.rstrip("0") else ""
    else:
        frac = "." + micro
    if offset == 0:
        tz = rng.choice(["Z", "Z", "z", "+00:00", "-00:00", "+0000"])
    else:
        sign = "+" if offset > 0 else "-"
        h, m = divmod(abs(offset), 60)
        tz = f"{sign}{h:02d}:{m:02d}" if rng.random() < 0.8 else f"{sign}{h:02d}{m:02d}"
    sep = rng.choice("TTTTt ")
    return (f"{local.year:04d}-{local.month:02d}-{local.day:02d}{sep}"
            f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}{frac}{tz}")


_UTC = dt.timezone.utc
_INSTANTS = [
    dt.datetime(2026, 1, 1, 0, 4, 59, 500000, tzinfo=_UTC), dt.datetime(2026, 1, 1, 0, 0, 0, tzinfo=_UTC),
    dt.datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC), dt.datetime(2024, 2, 29, 12, 0, 0, tzinfo=_UTC),
    dt.datetime(2000, 2, 29, 23, 59, 59, tzinfo=_UTC), dt.datetime(1970, 1, 1, tzinfo=_UTC),
    dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC), dt.datetime(1, 1, 1, tzinfo=_UTC),
    dt.datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=_UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC),
    dt.datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC), dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=_UTC),
    dt.datetime(2100, 3, 1, tzinfo=_UTC), dt.datetime(1900, 2, 28, 23, 59, 59, tzinfo=_UTC),
] + [LIMIT + k * US for k in (-2, -1, 0, 0, 0, 1, 1, 2)] + [LIMIT - dt.timedelta(seconds=1), LIMIT + dt.timedelta(minutes=1)]

#: Timestamps in the plainest form (the one a fast path reads), at the edges of its range and rules.
PLAIN_TS = ["0002-01-01T00:00:00Z", "0002-01-01T00:00:00+23:59", "0002-01-01T00:00:00-23:59", "0001-12-31T23:59:59Z",
            "9998-12-31T23:59:59.999999Z", "9998-12-31T23:59:59-23:59", "9998-12-31T23:59:59+23:59", "9999-01-01T00:00:00Z",
            "2026-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2026-02-28T23:59:59.999999Z", "2026-01-01T00:00:00.1Z",
            "2026-01-01T00:05:00.123456+00:00", "2026-01-01T00:05:00.123457+00:00", "2026-01-01T00:05:00.123456-00:00",
            "2026-01-01T00:05:00.12345Z", "2026-01-01T00:05:00.1234Z", "2026-01-01T00:05:00.12346Z", "2026-01-01T00:05:00.123Z",
            "2026-01-01T00:05:01Z", "2026-01-01T00:05:00Z", "2026-01-01T01:05:00.123456+01:00", "2025-12-31T23:05:00.123456-01:00",
            "2026-01-01T00:05:00.123456+00:01", "2026-01-01T00:04:00.123456-00:01", "2026-01-01T00:04:00.123457-00:01",
            "2026-01-01T00:00:00+00:60", "2026-01-01T00:00:00+00:5", "2026-01-01T00:00:00+0:00", "2026-01-01T00:00:00+00:00Z",
            "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999999Z", "1582-10-10T00:00:00Z", "0004-02-29T00:00:00Z",
            "0100-02-29T00:00:00Z", "0400-02-29T00:00:00Z", "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.0000000Z"]
TS_LITERALS = [
    "2024-02-29T00:00:00Z", "2025-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z", "2026-06-31T00:00:00Z", "2026-09-31T00:00:00Z", "2026-11-31T00:00:00Z", "2026-12-31T00:00:00Z",
    "2026-01-31T00:00:00Z", "2026-03-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-01-00T00:00:00Z",
    "2026-01-32T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-01-01T23:59:60Z", "2016-12-31T23:59:60Z",
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00-01:00", "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59+01:00", "0000-01-01T00:00:00Z",
    "0000-12-31T23:00:00-01:00", "10000-01-01T00:00:00Z", "", "2026-01-01", "2026-01-01T00:00:00", "2026-01-01T00:00Z",
    "2026-01-01T00:00:00.Z", "26-01-01T00:00:00Z", "2026-1-01T00:00:00Z", "2026-01-1T00:00:00Z", "2026-01-01T0:00:00Z",
    "+2026-01-01T00:00:00Z", " 2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z ", "2026-01-01T00:00:00Zjunk",
    "2026-01-01T00:00:00.123456789012Z", "２０２６-01-01T00:00:00Z", "2026-01-01T00:00:00,5Z", "2026-01-01T00:00:00+01:30:00",
    "2026-01-01T00:00:00+1", "2026-01-01T00:00:00-", "2026-01-01T00:00:00+", "2026-01-01T00:00:00+01:", "2026-01-01T00:00:00+01:0",
    "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00-24:00", "2026-01-01T00:00:00+23:60", "2026-01-01T00:00:00+99:99",
    "2026-01-01T00:00:00+01", "2026-01-01T00:00:00+0100", "2026-01-01T00:00:00+01:00", "2026-01-01T00:00:00UTC",
    "2026-01-01T00:00:00GMT", "2026-01-01 00:00:00Z", "2026-01-01t00:00:00z", "2026-01-01_00:00:00Z", "2026-01-01TT00:00:00Z",
    "2026-01-01T00:00:00.5-00:00", "2026-01-01T00:00:00.-5Z", "2026-01-01T00:00:00.+5Z", "2026-01-01T00:00:00.5.5Z",
    "2026/01/01T00:00:00Z", "2026-01-01T00:00:00ZZ", "2026-01-01T00:00:00Z\n", "1767225600", "2026-01-01T00:05:00.123456 Z",
    "2026-01-01T00:04:59.9999995Z", "2026-01-01T00:04:59.99999949Z", "2026-12-31T23:59:59.9999999Z",
    "9999-12-31T23:59:59.9999995Z", "9999-12-31T23:59:59.9999994Z", "9999-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00.0000004Z", "2026-01-01T00:05:00.1234565+00:00", "2026-01-01T01:35:00.1234565+01:30",
    "2026-01-01T00:05:00.1234565-00:00", "2026-01-01T00:05:00.123457-00:00", "2025-12-31T23:05:00.123456-01:00",
    "2025-12-31T23:05:00.123457-01:00", "2026-01-02T00:04:00.123456+23:59", "2025-12-31T00:06:00.123457-23:59",
] + [f"2026-01-01T00:05:00.12345{d}Z" for d in ("5", "55", "549", "55000001", "599", "6", "60", "600", "6000", "6001",
                                                   "64", "649", "6499999", "65", "6500", "651", "7", "69", "699")] + PLAIN_TS
TS_EXTRA_TEXTS = ['"2026\\u002d01-01T00:05:00Z"', '"2026-01-01T00:05:00\\u005a"', '"\\u0032026-01-01T00:00:00Z"',
                  '"2026-01-01T00:00:00\\/Z"', '"2026-01-01T00:05:00.123456\\u005a"', '"2026-01-01T00:05:00.12345\\u0037Z"',
                  "null", "1767225600", "1767225600.5", "[]", "{}", "true", '"2026-01-01T00:00:00Z', '"2026-01-01T00:00:00\x00Z"',
                  '"2026-01-01T00:00:00' + BAD_UTF8[0] + 'Z"', '"2026-01-01T00:00:00\\u0000"']


def _components_ts(rng: random.Random) -> str:
    y = rng.choice([2026, 2026, 2024, 2025, 2000, 2100, 1900, 1970, 1, 9999, 0, 10000, 99])
    mo = rng.choice([1, 2, 2, 3, 4, 6, 9, 11, 12, 0, 13])
    d = rng.choice([1, 28, 29, 29, 30, 31, 31, 0, 32])
    h, mi, s = rng.choice([0, 12, 23, 24]), rng.choice([0, 59, 60]), rng.choice([0, 59, 60, 61])
    frac = rng.choice(["", ".5", ".123", ".123456", ".1234567", ".123456789", ".", ".1234567890", ".9999999"])
    sep = rng.choice(["T", "T", "t", " ", "_"])
    tz = rng.choice(["Z", "Z", "z", "+00:00", "-00:00", "+01:30", "+0100", "+24:00", "-24:00", "+23:59", "+01",
                     "-23:59", "+1:00", "+01:60", "", "ZZ", "+01:00:00"])
    return f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{tz}"


def _ts_text(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return _js(_render(rng.choice(_INSTANTS), rng))
    if r < 0.7:
        return _js(rng.choice(TS_LITERALS))
    if r < 0.9:
        return _js(_components_ts(rng))
    return rng.choice(TS_EXTRA_TEXTS)


def _uuid_text(rng: random.Random) -> str:
    u = uuid.UUID(int=rng.getrandbits(128))
    s, h = str(u), u.hex
    r = rng.randrange(28)
    forms = {
        0: s, 1: s, 2: s, 3: s.upper(), 4: h, 5: h.upper(), 6: "".join(c.upper() if rng.random() < 0.5 else c for c in s),
        7: "{" + s + "}", 8: "urn:uuid:" + s, 9: s[:-1], 10: s + "0", 11: h[:-1], 12: h + "0",
        13: s[:5] + "g" + s[6:], 14: h[:31] + "G", 15: s.replace("-", "", 1), 16: s[:8] + s[9:13] + "-" + s[13:],
        17: "", 18: "00000000-0000-0000-0000-000000000000", 19: "ffffffff-ffff-ffff-ffff-ffffffffffff",
        20: s[:8] + "_" + s[9:], 21: " " + s, 22: s + " ", 23: s[:8] + "-" + s[9:13] + "--" + s[14:],
        24: h[:8] + "-" + h[8:12] + "-" + h[12:16] + h[16:], 25: s[:23] + s[24:] + "0",
    }
    if r in forms:
        return _js(forms[r])
    if r == 26:
        return '"' + s[:-1] + "\\u%04x" % ord(s[-1]) + '"'
    return rng.choice(["null", "1", "[]", '"' + s + '\\n"', '"' + s[:10] + BAD_UTF8[0] + s[11:] + '"',
                       '"' + s[:10] + "é" + s[11:] + '"', '"' + s.replace("a", "\\u0061") + '"'])


_BASE_DOCS: list[dict[str, Any]] = [
    {"event_id": "0b9c5d2e-4f1a-4c8e-9d3b-7a6e5f4c3b2a", "tenant_id": "acme", "event_type": "page_view",
     "anonymous_id": "anon-33bb2dcba933", "user_id": None, "occurred_at": "2026-01-01T00:04:58.401Z",
     "received_at": "2026-01-01T00:05:00.001Z", "source_id": "collector-04", "source_seq": 17,
     "properties": {"path": "/pricing", "referrer": "google"}, "schema_version": 1},
    {"event_id": "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", "tenant_id": "tenant-001", "event_type": "click",
     "anonymous_id": "anon-1", "user_id": "user-00ff00ff00", "occurred_at": "2026-01-01T00:05:00.123456Z",
     "received_at": "2026-01-01T00:05:00.123456Z", "source_id": "c1", "source_seq": 0,
     "properties": {"path": "/pricing", "element": "cta-start-trial"}, "schema_version": 1},
    {"event_id": "ffffffff-ffff-4fff-bfff-ffffffffffff", "tenant_id": "z9_-", "event_type": "identify",
     "anonymous_id": "a", "user_id": "u", "occurred_at": "2025-12-31T23:00:00+01:00",
     "received_at": "2026-01-01T01:35:00.123456+01:30", "source_id": "s", "source_seq": 9223372036854775807,
     "properties": {"traits": {"plan": "team", "seats": 12, "trial": True, "coupon": None,
                               "tags": ["a", "b", {"path": "/nested"}]}, "path": "/signup", "element": None},
     "schema_version": 1},
    {"event_id": "00000000-0000-0000-0000-000000000000", "tenant_id": "0", "event_type": "custom",
     "anonymous_id": "é😀\"\\/\n", "occurred_at": "2026-01-01T00:00:00Z", "received_at": "2025-12-31T23:59:59.999999Z",
     "source_id": "x" * 128, "source_seq": 1, "schema_version": 1,
     "properties": {"name": "video_played", "duration": 12.5, "big": 12345678901234567890, "neg": -1e-7, "ok": False,
                    "none": None, "list": [], "obj": {}, "element": "é\"\\", "path": ""}},
    {"event_id": "0B9C5D2E4F1A4C8E9D3B7A6E5F4C3B2A", "tenant_id": "a" * 64, "event_type": "form_submit",
     "anonymous_id": "x" * 128, "user_id": None, "occurred_at": "2026-01-01T00:05:00Z",
     "received_at": "2026-01-01T00:05:00.123456Z", "source_id": "collector-00", "source_seq": 3, "schema_version": 1},
]


def _pairs(doc: dict[str, Any], ascii_only: bool = False) -> list[list[str]]:
    enc = _ja if ascii_only else _js
    return [[enc(k), json.dumps(v, ensure_ascii=ascii_only)] for k, v in doc.items()]


BASES = [_pairs(d) for d in _BASE_DOCS] + [_pairs(_BASE_DOCS[3], ascii_only=True)]

FIELDS = ("event_id", "tenant_id", "event_type", "anonymous_id", "occurred_at", "received_at", "source_id", "source_seq",
          "schema_version", "user_id", "properties")


def _field_value(name: str, rng: random.Random, ws: Callable[[], str]) -> str:
    if name == "event_id":
        return _uuid_text(rng)
    if name == "tenant_id":
        return rng.choice(TENANT_TEXTS)
    if name == "event_type":
        return rng.choice(ETYPE_TEXTS)
    if name in ("anonymous_id", "source_id"):
        return rng.choice(ID_TEXTS)
    if name == "user_id":
        return "null" if rng.random() < 0.3 else rng.choice(ID_TEXTS)
    if name in ("occurred_at", "received_at"):
        return _ts_text(rng)
    if name == "source_seq":
        return rng.choice(SEQ_TEXTS)
    if name == "schema_version":
        return rng.choice(SV_TEXTS)
    return _props_text(rng, ws)


def _escaped_key(name: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:  # the same key after JSON unescaping
        i = rng.randrange(len(name))
        return '"' + name[:i] + "\\u%04x" % ord(name[i]) + name[i + 1:] + '"'
    return _js(rng.choice([name.upper(), name.capitalize(), name + " ", " " + name, name[:-1], name + "\x00",
                           name.replace("_", "-"), name + "_"]))


WS_PLAIN = ["", "", " ", "\t", "\n", "\r", "\r\n", " \t\n "]
WS_ODD = ["", " ", "\n", "\x0b", "\x0c", "\u00a0", "\x00", "\u2028", "\ufeff", "\udcff"]


def _ws_fn(rng: random.Random) -> Callable[[], str]:
    mode = rng.random()
    if mode < 0.6:
        return lambda: ""
    if mode < 0.92:
        return lambda: rng.choice(WS_PLAIN) if rng.random() < 0.5 else ""
    return lambda: rng.choice(WS_ODD) if rng.random() < 0.3 else rng.choice(WS_PLAIN)


def _serialize(pairs: list[list[str]], ws: Callable[[], str]) -> bytes:
    body = ",".join(f"{ws()}{k}{ws()}:{ws()}{v}{ws()}" for k, v in pairs)
    return (ws() + "{" + body + ws() + "}" + ws()).encode("utf-8", "surrogateescape")


INTERESTING_BYTES = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"0", b"9", b"-", b"+", b".", b"e", b"E", b" ",
                     b"\n", b"\x00", b"\x01", b"\x1f", b"\x7f", b"\x80", b"\xc3", b"\xe2", b"\xf0", b"\xff", b"u", b"Z",
                     b"T", b"n", b"t", b"f", b"a"]
TRAILING = [b"x", b"}", b",", b"\x00", b"{}", b" \n", b"\n", b"\r\n\t ", b"//", b"]", b'"', b"0", b"\xff", b"\x0b", b" x"]


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    k = rng.randrange(len(data) + 1)
    op = rng.randrange(9)
    if op == 0:
        return data[:k]
    if op == 1 and k < len(data):
        return data[:k] + bytes([data[k] ^ (1 << rng.randrange(8))]) + data[k + 1:]
    if op == 2:
        return data[:k] + rng.choice(INTERESTING_BYTES) + data[k:]
    if op == 3:
        return data[:k] + data[k + 1:]
    if op == 4 and k < len(data):
        return data[:k] + rng.choice(INTERESTING_BYTES) + data[k + 1:]
    if op == 5:
        return data + rng.choice(TRAILING)
    if op == 6:
        return data[:k] + data[k:k + rng.randrange(1, 40)] + data[k:]
    if op == 7:
        return rng.choice([b"\xef\xbb\xbf", b" ", b"\n", b"x", b"[", b"\x00", b"{}"]) + data
    return data[:k] + bytes([rng.randrange(256)]) + data[k:]


def _variant(rng: random.Random) -> bytes:
    ws = _ws_fn(rng)
    pairs = [list(p) for p in rng.choice(BASES)]
    for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3, 4))):
        op = rng.random()
        if op < 0.55:
            name = rng.choice(FIELDS + ("received_at", "received_at", "properties", "properties"))
            value = _field_value(name, rng, ws)
            slot = next((p for p in pairs if p[0] == _js(name)), None)
            if slot is None:
                pairs.insert(rng.randrange(len(pairs) + 1), [_js(name), value])
            else:
                slot[1] = value
        elif op < 0.62 and pairs:
            pairs.pop(rng.randrange(len(pairs)))
        elif op < 0.72:  # a repeated key: the same value, or another one, before or after the first
            name = rng.choice(FIELDS)
            value = _field_value(name, rng, ws) if rng.random() < 0.7 else next(
                (p[1] for p in pairs if p[0] == _js(name)), '"x"')
            pairs.insert(rng.randrange(len(pairs) + 1), [_js(name), value])
        elif op < 0.82:
            pairs.insert(rng.randrange(len(pairs) + 1), [rng.choice(UNKNOWN_KEYS), _any_json(rng)])
        elif op < 0.92 and pairs:
            slot = rng.choice(pairs)
            if slot[0].isascii() and len(json.loads(slot[0])) > 0:
                slot[0] = _escaped_key(json.loads(slot[0]), rng)
        else:
            rng.shuffle(pairs)
    data = _serialize(pairs, ws)
    if rng.random() < 0.2:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = _mutate_bytes(rng, data)
    return data


def _targeted(rng: random.Random) -> list[bytes]:
    """Each tricky value alone in an otherwise valid event (so a wrong accept is not masked by another flaw)."""
    out: list[bytes] = []
    plain = lambda: ""  # noqa: E731
    n = 0

    def with_field(name: str, value: str) -> None:
        nonlocal n
        pairs = [list(p) for p in BASES[n % len(BASES)]]
        n += 1
        slot = next((p for p in pairs if p[0] == _js(name)), None)
        if slot is None:
            pairs.append([_js(name), value])
        else:
            slot[1] = value
        out.append(_serialize(pairs, plain))

    for text in TENANT_TEXTS:
        with_field("tenant_id", text)
    for text in ETYPE_TEXTS:
        with_field("event_type", text)
    for text in ID_TEXTS:
        for name in ("anonymous_id", "source_id", "user_id"):
            with_field(name, text)
    for text in SEQ_TEXTS:
        with_field("source_seq", text)
    for text in SV_TEXTS:
        with_field("schema_version", text)
    for text in [_js(t) for t in TS_LITERALS] + TS_EXTRA_TEXTS:
        with_field("received_at", text)
        with_field("occurred_at", text)
    for instant in _INSTANTS:
        for _ in range(4):
            with_field("received_at", _js(_render(instant, rng)))
    for _ in range(120):
        with_field("event_id", _uuid_text(rng))
        with_field("received_at", _js(_components_ts(rng)))
    for text in WANTED_VALUE_TEXTS:
        for key in ('"path"', '"element"', '"\\u0070ath"', '"referrer"'):
            with_field("properties", "{" + key + ":" + text + "}")
            with_field("properties", '{"traits":{"a":[1,{}]},' + key + ":" + text + ',"z":null}')
    for props in ('{"path":"/a","path":"/b"}', '{"path":"/a","path":null}', '{"path":null,"path":"/b"}',
                  '{"path":1,"path":"/b"}', '{"path":"/b","path":1}', '{"element":"x","path":"/p","element":"y"}',
                  '{"path":"/a","\\u0070ath":"/b"}', '{"\\u0070ath":"/a","path":"/b"}', '{"path":"/a","pat\\u0068":5}',
                  "null", "[]", "{}", '"x"', "1", "true", '{"":""}', '{"path":{"path":"/x"}}', '{"a":{"path":"/x"}}',
                  '{"path":"/x"} ', ' {"path":"/x"}', '{ "path" : "/x" }', '{"path":"/x",}', '{"path":"/x"'):
        with_field("properties", props)
    for base in BASES:
        for i in range(len(base)):  # each field missing, repeated with another value, repeated with itself
            pairs = [list(p) for p in base]
            out.append(_serialize(pairs[:i] + pairs[i + 1:], plain))
            name = json.loads(pairs[i][0])
            for value in (_field_value(name, rng, plain), pairs[i][1]):
                for at in (0, len(pairs)):
                    copy = [list(p) for p in pairs]
                    copy.insert(at, [pairs[i][0], value])
                    out.append(_serialize(copy, plain))
            copy = [list(p) for p in pairs]
            copy[i][0] = _escaped_key(name, random.Random(i))
            out.append(_serialize(copy, plain))
            copy = [list(p) for p in pairs]
            copy.insert(i, [_escaped_key(name, random.Random(i)), _field_value(name, rng, plain)])
            out.append(_serialize(copy, plain))
            copy.insert(len(copy), [_escaped_key(name, random.Random(i)), _field_value(name, rng, plain)])
            out.append(_serialize(copy, plain))
        for key in UNKNOWN_KEYS:
            for _ in range(3):
                pairs = [list(p) for p in base]
                pairs.insert(rng.randrange(len(pairs) + 1), [key, _any_json(rng)])
                out.append(_serialize(pairs, plain))
        data = _serialize([list(p) for p in base], plain)
        for w in WS_PLAIN + WS_ODD:
            out.append(_serialize([list(p) for p in base], lambda: w))
        for tail in TRAILING:
            out.append(data + tail)
        for cut in range(1, len(data)):  # every truncation of one base
            if base is BASES[1] or cut % 7 == 0:
                out.append(data[:cut])
        for b in BAD_UTF8:  # broken UTF-8 in each string value and key
            for i in range(len(base)):
                pairs = [list(p) for p in base]
                if pairs[i][1].startswith('"'):
                    pairs[i][1] = pairs[i][1][:2] + b + pairs[i][1][2:]
                    out.append(_serialize(pairs, plain))
                pairs = [list(p) for p in base]
                pairs[i][0] = pairs[i][0][:2] + b + pairs[i][0][2:]
                out.append(_serialize(pairs, plain))
        for char in GOOD_MULTIBYTE:
            pairs = [list(p) for p in base]
            for p in pairs:
                if p[1].startswith('"') and rng.random() < 0.5:
                    p[1] = p[1][:-1] + char + '"'
            out.append(_serialize(pairs, plain))
    return out


def _sized(datas: list[bytes], sizes: Sequence[int], rng: random.Random) -> list[bytes]:
    """Records padded to exactly each size and one byte more (with whitespace or an unknown key's string)."""
    out = []
    for data in datas:
        end = data.rindex(b"}") if b"}" in data else len(data)
        for size in sizes:
            for extra in (0, 1):
                target = size + extra
                if len(data) <= target:
                    out.append(data[:end] + b" " * (target - len(data)) + data[end:])
                if len(data) + 9 <= target and end > 1:
                    pad = b',"pad":"' + b"p" * (target - len(data) - 9) + b'"'
                    out.append(data[:end] + pad + data[end:])
    return out




PLAIN_BYTES = b"0123456789abcdefABCDEFZTtz:-+._ ,\"{}[]\\nulrs/" + bytes(range(0x20, 0x7f))


def _near_valid(rng: random.Random, sources: list[bytes]) -> bytes:
    """A compact, plain-ASCII valid record with one to three small edits (a character changed, inserted
    or deleted, a digit stepped up or down): mostly still plain JSON, so the scanner's own checks decide."""
    data = bytearray(rng.choice(sources))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        k = rng.randrange(len(data))
        op = rng.randrange(5)
        if op == 0:
            data[k] = rng.choice(PLAIN_BYTES)
        elif op == 1:
            data.insert(k, rng.choice(PLAIN_BYTES))
        elif op == 2:
            del data[k]
        else:
            digits = [i for i, c in enumerate(data) if 0x30 <= c <= 0x39]
            k = rng.choice(digits)
            data[k] = 0x30 + (data[k] - 0x30 + rng.choice((1, 9))) % 10
    return bytes(data)




def _near_valid_sources() -> list[bytes]:
    compact = [_serialize([list(p) for p in b], lambda: "") for b in BASES]
    sources = [d for d in compact if d.isascii() and b"\\" not in d]
    datas, kinds, _ = generated(GeneratorConfig(seed=17, tenants=4, duration_s=1, rate_per_s=200))
    sources += [d for d, k in zip(datas, kinds) if k == "valid"][:60]
    for base in BASES[:3]:  # each plain timestamp in each base, compact
        for ts in PLAIN_TS:
            pairs = [list(p) for p in base]
            next(p for p in pairs if p[0] == '"received_at"')[1] = _js(ts)
            sources.append(_serialize(pairs, lambda: ""))
    return sources


def fuzz_corpus(sizes: Sequence[int]) -> list[bytes]:
    """The whole corpus; records near each of ``sizes`` (the scanner's byte limits under test) included."""
    rng = random.Random(20260101)
    corpus = _targeted(rng)
    corpus += [_variant(rng) for _ in range(8000)]
    sources = _near_valid_sources()
    corpus += sources + [_near_valid(rng, sources) for _ in range(12000)]
    some = rng.sample(corpus, 60) + [_serialize([list(p) for p in b], lambda: "") for b in BASES]
    corpus += _sized(some, sorted(set(sizes)), rng)
    return corpus
