"""Turn ``streaming/segments.yaml`` (the speed layer's rule file) into the dbt seeds the batch layer's
``fct_segment_memberships`` reads, so both layers judge membership from one file.

The CSVs are committed and generated ahead of time, never while definitions load (a code location may
run from a read-only image, and loading definitions should not edit the source tree): ``make seeds``
(``python -m assets.dbt.segment_seeds``) writes them, a unit test fails when they drift from the YAML,
and :func:`check_segment_seeds`, called before dbt parses the project, refuses stale seeds with the
command that fixes them.
"""

from __future__ import annotations

import csv
import io
import sys
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


class StaleSegmentSeeds(RuntimeError):
    """The committed seeds are not the ones the rules file generates."""


def stale_segment_seeds(seeds_dir: Path, rules_path: Path = DEFAULT_RULES_PATH) -> list[str]:
    """The seed files under ``seeds_dir`` that are missing or differ from what ``rules_path`` generates."""
    return [name for name, text in render_segment_seeds(rules_path).items()
            if not (seeds_dir / name).is_file() or (seeds_dir / name).read_text() != text]


def check_segment_seeds(seeds_dir: Path, rules_path: Path = DEFAULT_RULES_PATH) -> None:
    """Raise :class:`StaleSegmentSeeds` naming the files and the fix when the seeds are stale."""
    stale = stale_segment_seeds(seeds_dir, rules_path)
    if stale:
        raise StaleSegmentSeeds(
            f"{', '.join(str(seeds_dir / n) for n in stale)} not generated from {rules_path}: the batch layer "
            "would judge segments by other rules than the speed layer. Run `make seeds` "
            "(python -m assets.dbt.segment_seeds) and commit the CSVs.")


def write_segment_seeds(seeds_dir: Path, rules_path: Path = DEFAULT_RULES_PATH) -> bool:
    """Write the seeds if they differ; True when something changed."""
    changed = False
    for name, text in render_segment_seeds(rules_path).items():
        path = seeds_dir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed = True
    return changed


if __name__ == "__main__":
    seeds = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds"
    print(f"{'wrote' if write_segment_seeds(seeds) else 'unchanged:'} {seeds}", file=sys.stderr)
