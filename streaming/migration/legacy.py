"""The legacy pipeline as a reconciliation source: its counts (and event ids, where it has them) per
tenant x event type x hour, read from its PostgreSQL database or from its CSV/Parquet exports in S3, with
its names mapped to tally's.

Counts come out as ``LEGACY_COLUMNS`` (``hour`` = epoch hour of the legacy's bucket; a query by minute is
rolled up to hours), ids as ``ID_COLUMNS``. Every problem the user can fix (a DSN that does not connect,
a query missing a column, a name the mapping lacks) is a SettingError naming TALLY_MIGRATION_CONFIG.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pandas as pd

from streaming.migration.config import MigrationConfig, PostgresSource, S3Source, config_error

LEGACY_COLUMNS = ["tenant_id", "event_type", "hour", "n"]
ID_COLUMNS = ["tenant_id", "event_type", "hour", "event_id"]
_COUNT_NEEDS = ("tenant", "event_type", "count")
_ID_NEEDS = ("tenant", "event_type", "event_id")


def _epoch_hours(values: pd.Series, path: str) -> pd.Series:
    stamps = pd.to_datetime(values, utc=True, errors="coerce")
    if stamps.isna().any():
        raise config_error(path, "has a legacy query whose hour/minute column holds values that are not "
                           "timestamps", "return the bucket as a timestamp, e.g. date_trunc('hour', received_at)")
    return (stamps.astype("int64") // 3_600_000_000_000).astype("int64")


def _check_columns(frame: pd.DataFrame, needs: tuple[str, ...], which: str, path: str) -> str:
    """The time column's name (hour or minute); an error naming what is missing."""
    columns = set(frame.columns)
    missing = [c for c in needs if c not in columns]
    time_column = "hour" if "hour" in columns else "minute" if "minute" in columns else None
    if time_column is None:
        missing.append("hour (or minute)")
    if missing:
        raise config_error(path, f"has a legacy {which} that returns no {', '.join(missing)} column "
                           f"(it returns {', '.join(sorted(columns)) or 'nothing'})",
                           f"alias the {which}'s columns as {', '.join(needs[:-1])}, hour (or minute) and "
                           f"{needs[-1]}")
    return time_column


class LegacySource:
    """Reads one configured legacy source for ``[start, end)``."""

    def __init__(self, config: MigrationConfig, s3: Any = None) -> None:
        self.config = config
        self.s3 = s3

    @property
    def has_ids(self) -> bool:
        return isinstance(self.config.source, PostgresSource) and self.config.source.ids_query is not None

    def counts(self, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
        raw = self._rows("query", start, end)
        time_column = _check_columns(raw, _COUNT_NEEDS, "query", self.config.path)
        frame = self._mapped(raw, time_column)
        frame["n"] = pd.to_numeric(raw["count"], errors="raise").astype("int64")
        return frame.groupby(["tenant_id", "event_type", "hour"], as_index=False)["n"].sum()[LEGACY_COLUMNS]

    def ids(self, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
        """One row per event the legacy counted (a double count is two rows), or no rows without ids."""
        if not self.has_ids:
            return pd.DataFrame(columns=ID_COLUMNS)
        raw = self._rows("ids_query", start, end)
        time_column = _check_columns(raw, _ID_NEEDS, "ids_query", self.config.path)
        frame = self._mapped(raw, time_column)
        frame["event_id"] = raw["event_id"].astype(str).str.lower()
        return frame[ID_COLUMNS]

    def _mapped(self, raw: pd.DataFrame, time_column: str) -> pd.DataFrame:
        path = self.config.path
        return pd.DataFrame({
            "tenant_id": [self.config.tenant(str(t)) for t in raw["tenant"]],
            "event_type": [self.config.event_type(str(e)) for e in raw["event_type"]],
            "hour": _epoch_hours(raw[time_column], path),
        })

    def _rows(self, which: str, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
        source = self.config.source
        if isinstance(source, PostgresSource):
            return _postgres_rows(source, getattr(source, which), start, end, which, self.config.path)
        return _s3_rows(self.s3, source, start, end, self.config.path)


def _postgres_rows(source: PostgresSource, query: str, start: dt.datetime, end: dt.datetime, which: str,
                   path: str) -> pd.DataFrame:
    import psycopg

    try:
        conn = psycopg.connect(source.dsn, connect_timeout=10)
    except psycopg.Error as exc:
        # psycopg's message names host, port and user, never the password; the DSN itself is not shown
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise config_error(path, f"has a legacy DSN tally cannot connect with ({reason})",
                           "fix legacy.postgres.dsn (host, port, database, user; the password from an "
                           "environment variable as ${VAR})") from None
    try:
        with conn, conn.cursor() as cur:
            try:
                cur.execute(query, {"start": start, "end": end})
            except psycopg.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise config_error(path, f"has a legacy {which} the database refuses ({first})",
                                   f"fix legacy.postgres.{which} (it takes %(start)s and %(end)s, the range's "
                                   "bounds, as parameters)") from None
            if cur.description is None:
                raise config_error(path, f"has a legacy {which} that returns no rows", f"make legacy.postgres.{which} "
                                   "a select")
            columns = [d.name for d in cur.description]
            return pd.DataFrame(cur.fetchall(), columns=columns)
    finally:
        conn.close()


def _s3_rows(s3: Any, source: S3Source, start: dt.datetime, end: dt.datetime, path: str) -> pd.DataFrame:
    """Every export file under the prefix (CSV or Parquet with the query's columns), cut to the range."""
    if s3 is None:
        raise config_error(path, "names an S3 legacy source but no S3 client was given", "run through tally migrate")
    frames = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=source.bucket, Prefix=source.prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=source.bucket, Key=obj["Key"])["Body"].read()
            reader = pd.read_parquet if source.format == "parquet" else pd.read_csv
            frames.append(reader(io.BytesIO(body)))
    if not frames:
        raise config_error(path, f"names legacy exports under s3://{source.bucket}/{source.prefix}, where there are "
                           "none", "fix legacy.s3.bucket and prefix, or export the legacy counts there")
    frame = pd.concat(frames, ignore_index=True)
    time_column = _check_columns(frame, _COUNT_NEEDS, "export", path)
    stamps = pd.to_datetime(frame[time_column], utc=True, errors="coerce")
    return frame[(stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))]
