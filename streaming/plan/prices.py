"""The dated price table (``prices.json`` beside this module) and a user's overrides of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streaming.settings import SettingError

DEFAULT_PRICES = Path(__file__).with_name("prices.json")


def _merge(base: dict[str, Any], override: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            raise SettingError("--prices", source, f"names {path}, which the price table does not have",
                               f"use the keys of {DEFAULT_PRICES.name} (e.g. kinesis.shard_hour); leave out the ones you keep")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise SettingError("--prices", source, f"gives {path} a {type(value).__name__}, not an object",
                                   f"give {path} an object like the one in {DEFAULT_PRICES.name}")
            out[key] = _merge(base[key], value, path, source)
        elif isinstance(base[key], (int, float)) and not isinstance(base[key], bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise SettingError("--prices", source, f"gives {path}={value!r}, not a price",
                                   f"set {path} to a number of {base.get('currency', 'USD')} of 0 or more")
            out[key] = float(value)
        else:
            out[key] = value
    return out


def load_prices(override: Path | None = None) -> dict[str, Any]:
    """The default table, with ``override``'s values in place of the ones it names."""
    prices = json.loads(DEFAULT_PRICES.read_text())
    if override is None:
        return prices
    try:
        given = json.loads(Path(override).read_text())
    except FileNotFoundError:
        raise SettingError("--prices", str(override), "does not exist",
                           "give --prices (or TALLY_PLAN_PRICES) a JSON file with the prices you pay") from None
    except json.JSONDecodeError as exc:
        raise SettingError("--prices", str(override), f"is not JSON ({exc.msg} at line {exc.lineno})",
                           f"write the overrides as JSON with the keys of {DEFAULT_PRICES.name}") from None
    if not isinstance(given, dict):
        raise SettingError("--prices", str(override), "is not a JSON object",
                           f"write the overrides as a JSON object with the keys of {DEFAULT_PRICES.name}")
    merged = _merge(prices, given, "", str(override))
    merged["as_of"] = f"{prices['as_of']}, with overrides from {override}"
    return merged
