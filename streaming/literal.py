"""Stored data shown literally: tenant-visible strings never act on a terminal or a parser.

Page paths, properties, ids and dead letters' raw bytes come from tenants' SDKs. Printed, a value is
exactly what was stored, except the characters that would act instead of show: C0/C1 control
characters (ANSI escape sequences start with ESC or the C1 CSI), DEL, and the Unicode bidirectional
controls (an RTL override reorders what a reader sees). Those are shown as ``\\xNN`` / ``\\uNNNN``
escapes, and a backslash as ``\\\\`` so that an escape in the output is never ambiguous.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls, DEL, C1 controls; bidi embeddings/overrides/isolates and the implicit marks; the line
# and paragraph separators (which end lines in some terminals and editors); and the backslash itself.
_ACTIVE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\udc80-\udcff\\\\]")
_ACTIVE_KEEP_LINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# In JSON text, json.dumps already escapes C0, quotes and backslashes; these are the rest.
_JSON_ACTIVE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``value`` as text that shows every character and runs none (one line: newlines are escaped).
    Bytes that are not UTF-8 are shown as ``\\xNN``."""
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
    return _ACTIVE.sub(_escape, text)


def printable_lines(text: str) -> str:
    """Like :func:`printable` for tally's own multi-line messages: newlines stay, backslashes stay."""
    return _ACTIVE_KEEP_LINES.sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group(0)):04x}"


def json_text(doc: Any, indent: int | None = 1) -> str:
    """JSON that decodes to ``doc`` exactly and holds no character a terminal would act on."""
    text = json.dumps(doc, indent=indent, ensure_ascii=False, default=_default, allow_nan=False)
    return _JSON_ACTIVE.sub(_json_escape, text)


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays (list columns)
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
