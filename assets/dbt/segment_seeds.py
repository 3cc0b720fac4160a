"""Turn ``streaming/segments.yaml`` (the speed layer's rule file) into the dbt seeds the batch layer's
``fct_segment_memberships`` reads, so both layers judge membership from one file.

``write_segment_seeds`` runs before every dbt build from Dagster; the committed CSVs are its output, and
a test fails if they drift from the YAML.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from streaming.segments import DEFAULT_RULES_PATH, load_rules

RULES_SEED = "segment_rules.csv"
CONDITIONS_SEED = "segment_rule_conditions.csv"


def render_segment_seeds(rules_path: Path = DEFAULT_RULES_PATH) -> dict[str, str]:
    """{seed file name: CSV text} for the rules in ``rules_path``."""
    rules = load_rules(rules_path)
    out_rules, out_conditions = io.StringIO(), io.StringIO()
    w_rules = csv.writer(out_rules, lineterminator="\n")
    w_conditions = csv.writer(out_conditions, lineterminator="\n")
    w_rules.writerow(["segment_name", "description", "event_type", "min_count", "window_hours", "condition_count"])
    w_conditions.writerow(["segment_name", "property", "value"])
    for rule in rules:
        w_rules.writerow([rule.name, rule.description, rule.event_type, rule.min_count, rule.window_hours, len(rule.where)])
        for key, value in sorted(rule.where.items()):
            w_conditions.writerow([rule.name, key, value])
    return {RULES_SEED: out_rules.getvalue(), CONDITIONS_SEED: out_conditions.getvalue()}


def write_segment_seeds(seeds_dir: Path, rules_path: Path = DEFAULT_RULES_PATH) -> bool:
    """Write the seeds if they differ; True when something changed."""
    changed = False
    for name, text in render_segment_seeds(rules_path).items():
        path = seeds_dir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed = True
    return changed
