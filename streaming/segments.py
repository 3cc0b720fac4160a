"""Segment rules (``streaming/segments.yaml``): loaded and validated here, used by both layers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streaming.events import EVENT_TYPES

DEFAULT_RULES_PATH = Path(__file__).with_name("segments.yaml")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class SegmentRule:
    name: str
    description: str
    event_type: str
    min_count: int
    window_hours: int
    where: dict[str, str] = field(default_factory=dict)

    def matches(self, event_type: str, properties: dict[str, Any]) -> bool:
        """Does one event count toward this segment?"""
        if event_type != self.event_type:
            return False
        return all(properties.get(k) == v for k, v in self.where.items())


def load_rules(path: Path = DEFAULT_RULES_PATH) -> list[SegmentRule]:
    doc = yaml.safe_load(path.read_text()) or {}
    rules = []
    for i, raw in enumerate(doc.get("segments", [])):
        where = {str(k): str(v) for k, v in (raw.get("where") or {}).items()}
        rule = SegmentRule(
            name=raw["name"], description=raw.get("description", ""), event_type=raw["event_type"],
            min_count=int(raw["min_count"]), window_hours=int(raw["window_hours"]), where=where,
        )
        if not _NAME_RE.match(rule.name):
            raise ValueError(f"{path}: segment #{i} name {rule.name!r} must match {_NAME_RE.pattern}")
        if rule.event_type not in EVENT_TYPES:
            raise ValueError(f"{path}: segment {rule.name} event_type {rule.event_type!r} is not one of {EVENT_TYPES}")
        if rule.min_count < 1 or rule.window_hours < 1:
            raise ValueError(f"{path}: segment {rule.name} needs min_count >= 1 and window_hours >= 1")
        rules.append(rule)
    names = [r.name for r in rules]
    if len(names) != len(set(names)):
        raise ValueError(f"{path}: duplicate segment names")
    return rules
