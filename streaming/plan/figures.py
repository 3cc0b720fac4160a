"""The measured figures a plan is computed from: ``bench/results.json`` (written by ``make bench``).

Every figure the planner reads is recorded, so a plan can cite the figure behind each of its lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from streaming.settings import SettingError

#: ``make bench`` writes here; the planner reads it from the source checkout tally is installed from.
DEFAULT_FIGURES = Path(__file__).resolve().parents[2] / "bench" / "results.json"


@dataclass
class Figures:
    values: dict[str, float]
    path: Path
    used: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str) -> float:
        """One figure by name; a missing one is a clear error that says which benchmark writes it."""
        if name not in self.values:
            module = name.split("_", 1)[0]
            raise SettingError(
                "--figures", str(self.path), f"has no measured figure {name}",
                f"run `make bench` (or `.venv/bin/python -m bench {module}`) to measure it, or give --figures "
                "a results file that has it")
        value = float(self.values[name])
        self.used[name] = value
        return value

    def get(self, name: str, default: float) -> float:
        """A figure that may be absent (a component not benchmarked yet): ``default`` then, not recorded."""
        return self(name) if name in self.values else default


def load_figures(path: Path | None = None) -> Figures:
    path = path or DEFAULT_FIGURES
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise SettingError("--figures", str(path), "does not exist",
                           "run `make bench` in the tally checkout, or give --figures the results.json it wrote") from None
    except json.JSONDecodeError as exc:
        raise SettingError("--figures", str(path), f"is not JSON ({exc.msg} at line {exc.lineno})",
                           "give --figures a results.json written by `make bench`") from None
    if not isinstance(values, dict):
        raise SettingError("--figures", str(path), "is not a JSON object of figures",
                           "give --figures a results.json written by `make bench`")
    return Figures(values, path)
