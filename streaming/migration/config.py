"""The parallel run's configuration file (TALLY_MIGRATION_CONFIG): where the legacy pipeline's counts are.

YAML or TOML (by the file's suffix), one ``legacy`` section and the name mappings::

    legacy:
      postgres:
        dsn: "postgresql://reader:${LEGACY_DB_PASSWORD}@db.internal:5432/analytics"   # ${VAR}: from the environment
        query: |            # tenant, event_type, hour (or minute), count; %(start)s / %(end)s: the range
          select account as tenant, event_name as event_type, date_trunc('hour', received_at) as hour,
                 count(*) as count
          from events where received_at >= %(start)s and received_at < %(end)s group by 1, 2, 3
        ids_query: |        # optional: tenant, event_type, hour (or minute), event_id: one row per counted event
          select account as tenant, event_name as event_type, date_trunc('hour', received_at) as hour,
                 event_id::text as event_id from events where received_at >= %(start)s and received_at < %(end)s
      # or, instead of postgres:
      # s3: {bucket: legacy-exports, prefix: counts/, format: csv}   # files with the query's columns
    tenants: {ACME: acme}           # legacy name -> tally tenant; absent = the names are the same
    event_types: {pageview: page_view}
    lag_minutes: 20                 # how far behind the legacy pipeline runs: its last hours are pending

Every problem with the file is a :class:`~streaming.settings.SettingError` naming TALLY_MIGRATION_CONFIG
and the fix. The DSN is a secret (it may hold a password): it is never logged, printed or put in an error.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streaming.settings import SettingError, Settings

SETTING = "TALLY_MIGRATION_CONFIG"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def config_error(path: str | None, problem: str, fix: str) -> SettingError:
    return SettingError(SETTING, path, problem, fix)


@dataclass(frozen=True)
class PostgresSource:
    dsn: str = field(repr=False)
    query: str
    ids_query: str | None = None


@dataclass(frozen=True)
class S3Source:
    bucket: str
    prefix: str
    format: str  # csv | parquet


@dataclass(frozen=True)
class MigrationConfig:
    path: str
    source: PostgresSource | S3Source
    tenants: dict[str, str] = field(default_factory=dict)
    event_types: dict[str, str] = field(default_factory=dict)
    lag_minutes: int = 0

    def tenant(self, legacy_name: str) -> str:
        """The tally tenant of a legacy tenant name (the same name without a mapping)."""
        if not self.tenants:
            return legacy_name
        try:
            return self.tenants[legacy_name]
        except KeyError:
            raise config_error(self.path, f"maps no tally tenant for the legacy tenant {legacy_name!r}, which the "
                               "legacy source returned",
                               f"add '{legacy_name}: <tally tenant>' under tenants in {self.path}") from None

    def event_type(self, legacy_name: str) -> str:
        return self.event_types.get(legacy_name, legacy_name)


def _expand(text: str, path: str) -> str:
    def var(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise config_error(path, f"has a legacy DSN that names the environment variable {match.group(1)}, "
                               "which is not set", f"export {match.group(1)} before running tally migrate")
        return value

    return _VAR.sub(var, text)


def _read(path: Path) -> Any:
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(text)
        return yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise config_error(str(path), f"is not valid {'TOML' if path.suffix.lower() == '.toml' else 'YAML'} "
                           f"({str(exc).splitlines()[0]})", "fix the file's syntax") from None


def _mapping(doc: dict[str, Any], key: str, path: str) -> dict[str, str]:
    value = doc.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise config_error(path, f"has a {key} entry that is not a mapping of names", f"write {key} as "
                           "{legacy name: tally name}")
    return dict(value)


def load_config(path_text: str | None) -> MigrationConfig:
    if not path_text:
        raise config_error(None, "is not set", "set it to the YAML or TOML file describing the legacy pipeline's "
                           "counts (README: migrating from an existing pipeline)")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise config_error(path_text, "is not a readable file", "set it to the path of an existing YAML or TOML file")
    doc = _read(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("legacy"), dict):
        raise config_error(path_text, "has no legacy section", "add legacy: {postgres: {dsn, query}} or "
                           "legacy: {s3: {bucket, prefix, format}}")
    legacy = doc["legacy"]
    source: PostgresSource | S3Source
    if isinstance(legacy.get("postgres"), dict):
        pg = legacy["postgres"]
        if not isinstance(pg.get("dsn"), str) or not isinstance(pg.get("query"), str):
            raise config_error(path_text, "has a legacy.postgres section without a dsn and a query",
                               "give legacy.postgres a dsn (postgresql://...) and a query returning tenant, "
                               "event_type, hour and count")
        ids = pg.get("ids_query")
        source = PostgresSource(_expand(pg["dsn"], path_text), pg["query"], ids if isinstance(ids, str) else None)
    elif isinstance(legacy.get("s3"), dict):
        s3 = legacy["s3"]
        fmt = str(s3.get("format", "csv")).lower()
        if not s3.get("bucket") or fmt not in ("csv", "parquet"):
            raise config_error(path_text, "has a legacy.s3 section without a bucket or with a format other than "
                               "csv or parquet", "give legacy.s3 a bucket, a prefix and format: csv | parquet")
        source = S3Source(str(s3["bucket"]), str(s3.get("prefix", "")), fmt)
    else:
        raise config_error(path_text, "has a legacy section with neither postgres nor s3",
                           "add legacy: {postgres: {dsn, query}} or legacy: {s3: {bucket, prefix, format}}")
    lag = doc.get("lag_minutes", 0)
    if not isinstance(lag, int) or lag < 0:
        raise config_error(path_text, f"has lag_minutes={lag!r}", "set lag_minutes to 0 or a whole number of minutes")
    return MigrationConfig(path_text, source, _mapping(doc, "tenants", path_text),
                           _mapping(doc, "event_types", path_text), lag)


def config_from(settings: Settings) -> MigrationConfig:
    return load_config(settings.migration_config)
