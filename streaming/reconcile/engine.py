"""The comparison engine: per-layer minute counts in, verdicts out (pure; DuckDB in memory).

It is cheap where the layers agree: every layer's minutes are summed to tenant × event type × hour
together with a minute-weighted checksum (``sum(n * (minute_of_hour + 1))``, so counts that moved between
minutes of one hour still differ); only hours whose totals or checksums differ, or that are still open,
are read again at minute grain, and only hours where the archive and the warehouse differ are drilled to
event level (the exact event_ids). See :mod:`streaming.reconcile.model` for the attribution rules.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from streaming.reconcile.model import (
    ARCHIVE_COLUMNS, EVENT_COLUMNS, PRECEDENCE, SPEED_COLUMNS, WAREHOUSE_COLUMNS, Config, Inputs, Result,
    Table, Verdict,
)
from streaming.reconcile.sequences import HELD_COLUMNS, analyse_sequences

_EMPTY_EVENTS = pa.table({
    "event_id": pa.array([], pa.string()), "tenant_id": pa.array([], pa.string()),
    "event_type": pa.array([], pa.string()), "minute": pa.array([], pa.int64()),
    "source_id": pa.array([], pa.string()), "source_seq": pa.array([], pa.int64()),
})

_EMPTY_HELD = pa.table({
    "tenant_id": pa.array([], pa.string()), "event_type": pa.array([], pa.string()),
    "minute": pa.array([], pa.int64()), "reason": pa.array([], pa.string()),
})
_EMPTY_NUMBERS = pa.table({
    "source_id": pa.array([], pa.string()), "tenant_id": pa.array([], pa.string()),
    "source_seq": pa.array([], pa.int64()), "event_id": pa.array([], pa.string()),
    "minute": pa.array([], pa.int64()),
})

# Every layer projected to one wide row shape, so one UNION ALL + GROUP BY sums them all. Held cells
# (``Inputs.held``) add a row of zeros, so a cell that no layer holds yet still shows as pending.
_WIDE = ("a", "ap", "wr", "wd", "wm", "late", "s", "ca", "cw", "cs", "f")
_PROJECT = {
    "archive": "n as a, n_present as ap, 0 as wr, 0 as wd, 0 as wm, 0 as late, 0 as s, 1 as ca, 0 as cw, 0 as cs, "
               "forgotten as f",
    "warehouse": "0, 0, rows, distinct_ids, mart, late, 0, 0, 1, 0, 0",
    "speed": "0, 0, 0, 0, 0, 0, n, 0, 0, 1, 0",
    "held": "0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0",
}


def _with_columns(table: Table, columns: tuple[str, ...], name: str) -> Table:
    """Check the key columns are there and add missing count columns as zeros."""
    names = table.column_names if isinstance(table, pa.Table) else list(table.columns)
    for key in ("tenant_id", "event_type", "minute"):
        if key not in names:
            raise ValueError(f"the {name} table has no `{key}` column (has {names})")
    missing = [c for c in columns if c not in names]
    if not missing:
        return table
    if isinstance(table, pa.Table):
        for c in missing:
            table = table.append_column(c, pa.array(np.zeros(table.num_rows, dtype=np.int64)))
        return table
    return table.assign(**{c: 0 for c in missing})


def _layers_union(filter_sql: str, semi_join: str = "") -> str:
    """Every layer's rows in the wide shape; ``semi_join`` (a fixed clause) keeps only drilled hours
    before the rows are widened, so the minute stage never materializes the whole day."""
    parts = []
    for name, projection in _PROJECT.items():
        parts.append(f"select x.tenant_id::varchar as tenant_id, x.event_type::varchar as event_type, "
                     f"x.minute::bigint as minute, {projection} from {name}_in x {semi_join} {filter_sql}")
    return " union all ".join(parts)


def _verdict_sql() -> tuple[str, str]:
    """(findings list, primary verdict) SQL over a row with the wide columns, ``e`` and ``open``.

    Only constant SQL is built here; the tolerances are bound as ``$tol_abs`` and ``$tol_rel``.
    """
    tol = "greatest($tol_abs, $tol_rel * {x})"
    conditions = {
        Verdict.PENDING: "open or held",
        Verdict.ARCHIVE_MISSING: f"a - ap > {tol.format(x='a')}",
        Verdict.WAREHOUSE_MISSING: f"(wr + f < ap - {tol.format(x='ap')}) or (wm < e - {tol.format(x='e')})",
        Verdict.WAREHOUSE_EXTRA: f"(wr > a + {tol.format(x='a')}) or (wm > e + f + (a - ap) + {tol.format(x='e')})",
        Verdict.SPEED_MISSING: f"s < e - {tol.format(x='e')}",
        Verdict.SPEED_EXTRA: f"s > e + f + (a - ap) + {tol.format(x='e')}",
    }
    findings = "list_filter([" + ", ".join(
        f"case when {cond} then '{v.value}' end" for v, cond in conditions.items()
    ) + "], lambda x: x is not null)"
    primary = "case " + " ".join(
        f"when {conditions[v]} then '{v.value}'" for v in PRECEDENCE if v in conditions
    ) + f" else '{Verdict.OK.value}' end"
    return findings, primary


def reconcile(inputs: Inputs, config: Config = Config()) -> Result:
    """Compare the three layers and attribute every difference (see the module docstring)."""
    con = duckdb.connect()
    try:
        return _Run(con, inputs, config).run()
    finally:
        con.close()


class _Run:
    def __init__(self, con: duckdb.DuckDBPyConnection, inputs: Inputs, config: Config) -> None:
        self.con = con
        self.inputs = inputs
        self.config = config
        self.closed_before = inputs.watermarks.closed_before(config.lateness_s)
        lo = inputs.start_minute if inputs.start_minute is not None else -(2**62)
        hi = inputs.end_minute if inputs.end_minute is not None else 2**62
        self.params: dict[str, Any] = {"lo": lo, "hi": hi}

    def _sql(self, sql: str, **params: Any) -> duckdb.DuckDBPyConnection:
        used = {k: v for k, v in {**self.params, **params}.items() if f"${k}" in sql}
        return self.con.execute(sql, used)

    def run(self) -> Result:
        con, inputs = self.con, self.inputs
        con.register("archive_in", _with_columns(inputs.archive, ARCHIVE_COLUMNS, "archive"))
        con.register("warehouse_in", _with_columns(inputs.warehouse, WAREHOUSE_COLUMNS, "warehouse"))
        con.register("speed_in", _with_columns(inputs.speed, SPEED_COLUMNS, "speed"))
        con.register("held_in", inputs.held if inputs.held is not None else _EMPTY_HELD)
        con.register("numbers_in", inputs.numbers if inputs.numbers is not None else _EMPTY_NUMBERS)
        # Closed-before as an epoch minute bound; -inf (a layer with nothing) closes no window.
        closed = self.closed_before
        self.params["closed_min"] = int(closed // 60) if closed != float("-inf") else -(2**62)
        self._hours()
        self._cells()
        events = self._drill()
        self._classify()
        sequences = self._sequences()
        rollups = self._rollups()
        return self._result(events, sequences, rollups)

    # -- stage 1: hour totals and checksums ---------------------------------------------------------
    def _hours(self) -> None:
        ck = "(minute % 60 + 1)"
        self._sql(f"""
            create temp table hours as
            select tenant_id, event_type, minute // 60 as hour,
                   sum(a)::bigint a, sum(ap)::bigint ap, sum(wr)::bigint wr, sum(wd)::bigint wd,
                   sum(wm)::bigint wm, sum(late)::bigint late, sum(s)::bigint s, sum(f)::bigint f,
                   sum(a * {ck}) a_ck, sum(ap * {ck}) ap_ck, sum(wr * {ck}) wr_ck, sum(wd * {ck}) wd_ck,
                   sum(wm * {ck}) wm_ck, sum(s * {ck}) s_ck,
                   greatest(sum(ca), sum(cw), sum(cs))::bigint as minutes
            from ({_layers_union('where x.minute >= $lo and x.minute < $hi')})
            group by all
        """)
        # An hour is drilled when any equation of the attribution rules fails on its totals or
        # checksums, or when any of its minutes is still open.
        self._sql("""
            create temp table drill_hours as
            select tenant_id, event_type, hour from hours
            where a <> ap or a_ck <> ap_ck or wr <> ap or wr_ck <> ap_ck or wm <> wd or wm_ck <> wd_ck
               or s <> wd or s_ck <> wd_ck or (hour + 1) * 60 > $closed_min
            union
            select distinct tenant_id::varchar, event_type::varchar, minute::bigint // 60 from held_in
            where minute >= $lo and minute < $hi
        """)
        # Why a cell is held back (a layer that has not read the records that touch it), one line per cell.
        self._sql("""
            create temp table held as
            select tenant_id::varchar as tenant_id, event_type::varchar as event_type, minute::bigint as minute,
                   string_agg(distinct reason, '; ' order by reason) as reason
            from held_in where minute >= $lo and minute < $hi group by all
        """)

    # -- stage 2: minutes of the drilled hours -------------------------------------------------------
    def _cells(self) -> None:
        lo_hour, hi_hour = self._sql("select coalesce(min(hour), 0), coalesce(max(hour), -1) from drill_hours").fetchone()
        # A numeric range first (cheap, prunes most rows when few hours differ), then the exact keys.
        self.params.update(drill_lo=int(lo_hour) * 60, drill_hi=(int(hi_hour) + 1) * 60)
        union = _layers_union(
            "where x.minute >= $lo and x.minute < $hi and x.minute >= $drill_lo and x.minute < $drill_hi",
            "semi join drill_hours d on x.tenant_id = d.tenant_id and x.event_type = d.event_type "
            "and x.minute // 60 = d.hour",
        )
        self._sql(f"""
            create temp table cells as
            select u.tenant_id, u.event_type, u.minute,
                   sum(a)::bigint a, sum(ap)::bigint ap, sum(wr)::bigint wr, sum(wd)::bigint wd,
                   sum(wm)::bigint wm, sum(late)::bigint late, sum(s)::bigint s, sum(f)::bigint f
            from ({union}) u
            group by all
        """)

    # -- stage 3: event ids where the archive and the warehouse differ -------------------------------
    def _drill(self) -> pd.DataFrame:
        # Held cells are left out: a layer has not read them yet, so they need no evidence now.
        hours = [int(h) for (h,) in self._sql("""
            select distinct minute // 60 from cells c
            where (a <> ap or wr <> ap or wm <> wd) and minute + 1 <= $closed_min
              and not exists (select 1 from held h where h.tenant_id = c.tenant_id
                              and h.event_type = c.event_type and h.minute = c.minute)
            order by 1
        """).fetchall()]
        source = self.inputs.event_ids
        self.drilled = bool(hours) and source is not None
        if not self.drilled:
            self.con.register("ae", _EMPTY_EVENTS)
            self._sql("create temp table e_cells as select tenant_id, event_type, minute, 0::bigint e from ae limit 0")
            return pd.DataFrame(columns=["event_id", "tenant_id", "event_type", "minute", "table", "kind"])
        assert source is not None
        self.con.register("ae", source.archive_events(hours))
        self.con.register("wre", source.warehouse_events(hours, "raw"))
        self.con.register("wme", source.warehouse_events(hours, "mart"))
        self.drill_hours = hours
        self._sql("create temp table e_hours as select unnest($hours::bigint[]) as hour", hours=hours)
        # E: distinct archived event_ids per cell of a drilled hour.
        self._sql("""
            create temp table e_cells as
            select tenant_id, event_type, minute, count(distinct event_id) e from ae group by all
        """)
        ids = self._sql("""
            with a as (select distinct event_id, tenant_id, event_type, minute from ae),
                 r as (select distinct event_id, tenant_id, event_type, minute from wre),
                 m as (select distinct event_id, tenant_id, event_type, minute from wme),
                 known as (select * from a union select * from r)
            select *, 'raw' as "table", 'missing' as kind from (select * from a anti join r using (event_id))
            union all
            select *, 'raw', 'extra' from (select * from r anti join a using (event_id))
            union all
            select *, 'mart', 'missing' from (select * from known anti join m using (event_id))
            union all
            select *, 'mart', 'extra' from (select * from m anti join known using (event_id))
            order by "table", kind, tenant_id, event_type, minute, event_id
        """).df()
        return ids

    # -- stage 4: verdicts --------------------------------------------------------------------------
    def _classify(self) -> None:
        findings, primary = _verdict_sql()
        drilled_hours = "(select hour from e_hours)" if self.drilled else "(select null::bigint where false)"
        self._sql(f"""
            create temp table judged as
            with x as (
                select c.*,
                       case when c.minute // 60 in {drilled_hours} then coalesce(e.e, 0) else c.wd end as e,
                       c.minute + 1 > $closed_min as open,
                       h.reason as listed_reason
                from cells c left join e_cells e using (tenant_id, event_type, minute)
                left join held h using (tenant_id, event_type, minute)
            ),
            -- A layer whose unread records could not all be read: hold every cell where it has less.
            y as (
                select x.*, coalesce(listed_reason,
                           case when $unb_speed is not null and s < e then $unb_speed end,
                           case when $unb_archive is not null and (a < s or e < s) then $unb_archive end)
                           as held_reason
                from x
            ),
            x2 as (select y.*, held_reason is not null as held from y)
            select tenant_id, event_type, minute, a, ap, wr, wd, wm, s, e, late, f,
                   {primary} as verdict, {findings} as findings,
                   case when open then $open_reason else held_reason end as pending_reason
            from x2
        """, tol_abs=self.config.tolerance.absolute, tol_rel=float(self.config.tolerance.relative),
                  open_reason=self.inputs.watermarks.open_reason(self.config.lateness_s),
                  unb_speed=self.inputs.unbounded.get("speed layer"), unb_archive=self.inputs.unbounded.get("archive"))

    def _sequences(self) -> pd.DataFrame:
        seqs = self.inputs.sequences
        if seqs is None:
            return pd.DataFrame(columns=["source_id", "tenant_id", "first_missing", "last_missing", "missing",
                                         "min_minute", "max_minute", "verdict", "explained_by", "pending_reason",
                                         "event_ids"])
        self.con.register("seq_in", seqs)
        columns = ", ".join(HELD_COLUMNS)
        # Every number any layer holds: raw rows, archive lines of drilled hours, readable dead letters and
        # the stream records reconciliation read between the layers' positions.
        self._sql(f"""
            create temp table held_numbers as
            select {columns} from seq_in
            union all select {columns} from ae
            union all select {columns} from numbers_in
        """)
        return analyse_sequences(self.con, "held_numbers", "judged", self.params["lo"], self.params["hi"],
                                 self.params["closed_min"])

    def _rollups(self) -> pd.DataFrame:
        """Served hour/day counters against the sum of the same layer's minutes (closed, whole buckets)."""
        served = self.inputs.rollups
        columns = ["layer", "grain", "tenant_id", "event_type", "bucket", "served", "minutes_sum", "verdict"]
        if served is None:
            return pd.DataFrame(columns=columns)
        self.con.register("rollups_in", served)
        grains = self.inputs.rollup_grains
        if grains is None:
            frame = served if isinstance(served, pd.DataFrame) else served.to_pandas()
            grains = set(zip(frame["layer"], frame["grain"]))
        self.con.register("grains_in", pd.DataFrame(sorted(grains), columns=["layer", "grain"]))
        return self._sql(f"""
            with own as (
                select 'speed' as layer, 'hour' as grain, tenant_id, event_type, hour as bucket, s as n from hours
                union all select 'warehouse', 'hour', tenant_id, event_type, hour, wm from hours
                union all select 'speed', 'day', tenant_id, event_type, hour // 24, sum(s) from hours group by all
                union all select 'warehouse', 'day', tenant_id, event_type, hour // 24, sum(wm) from hours group by all
            ),
            own_sum as (
                select layer, grain, tenant_id, event_type, bucket, sum(n) as n from own
                semi join grains_in g using (layer, grain) group by all
            ),
            served as (
                select layer::varchar as layer, grain::varchar as grain, tenant_id::varchar as tenant_id,
                       event_type::varchar as event_type, bucket::bigint as bucket, sum(n)::bigint as n
                from rollups_in group by all
            ),
            joined as (
                select coalesce(s.layer, o.layer) as layer, coalesce(s.grain, o.grain) as grain,
                       coalesce(s.tenant_id, o.tenant_id) as tenant_id,
                       coalesce(s.event_type, o.event_type) as event_type, coalesce(s.bucket, o.bucket) as bucket,
                       coalesce(s.n, 0) as served, coalesce(o.n, 0)::bigint as minutes_sum
                from served s full join own_sum o
                  on s.layer = o.layer and s.grain = o.grain and s.tenant_id = o.tenant_id
                 and s.event_type = o.event_type and s.bucket = o.bucket
            ),
            bounded as (
                select *, case grain when 'hour' then 60 else 1440 end as width from joined
            )
            select layer, grain, tenant_id, event_type, bucket, served, minutes_sum,
                   layer || '_rollup_mismatch' as verdict
            from bounded
            where bucket * width >= $lo and (bucket + 1) * width <= $hi and (bucket + 1) * width <= $closed_min
              and served <> minutes_sum
            order by layer, grain, tenant_id, event_type, bucket
        """).df()

    # -- results ------------------------------------------------------------------------------------
    def _result(self, events: pd.DataFrame, sequences: pd.DataFrame, rollups: pd.DataFrame) -> Result:
        order = ", ".join(f"'{v.value}'" for v in PRECEDENCE)
        cells = self._sql("""
            select tenant_id, event_type, minute, a as archive, ap as archive_present, wr as warehouse_rows,
                   wd as warehouse_distinct, wm as warehouse_mart, s as speed, e as expected, late,
                   f as forgotten, verdict, array_to_string(findings, ',') as findings,
                   case when verdict = 'pending' then pending_reason end as pending_reason
            from judged order by tenant_id, event_type, minute
        """).df()
        hours = self._sql(f"""
            with ranked as (
                select tenant_id, event_type, minute // 60 as hour,
                       min(list_position([{order}], verdict)) as rank,
                       count(*) filter (where verdict = 'ok') as ok_minutes
                from judged group by all
            )
            select h.tenant_id, h.event_type, h.hour, h.a as archive, h.ap as archive_present,
                   h.wr as warehouse_rows, h.wd as warehouse_distinct, h.wm as warehouse_mart, h.s as speed,
                   h.late, h.minutes,
                   coalesce([{order}][r.rank], 'ok') as verdict
            from hours h left join ranked r using (tenant_id, event_type, hour)
            order by h.tenant_id, h.event_type, h.hour
        """).df()
        days = self._sql(f"""
            with h as (
                select h.*, coalesce([{order}][r.rank], 'ok') as verdict from hours h
                left join (select tenant_id, event_type, minute // 60 as hour,
                                  min(list_position([{order}], verdict)) as rank
                           from judged group by all) r using (tenant_id, event_type, hour)
            )
            select tenant_id, event_type, hour // 24 as day, sum(a)::bigint archive,
                   sum(ap)::bigint archive_present, sum(wr)::bigint warehouse_rows,
                   sum(wd)::bigint warehouse_distinct, sum(wm)::bigint warehouse_mart, sum(s)::bigint speed,
                   sum(late)::bigint late,
                   [{order}][min(list_position([{order}], verdict))] as verdict
            from h group by all order by tenant_id, event_type, day
        """).df()
        late = self._sql("""
            select tenant_id::varchar tenant_id, event_type::varchar event_type, minute::bigint as minute,
                   sum(late)::bigint late
            from warehouse_in where late > 0 and minute >= $lo and minute < $hi group by all order by all
        """).df()
        summary = self._summary(cells, sequences, late)
        for verdict, n in rollups["verdict"].value_counts().items() if len(rollups) else ():
            summary[str(verdict)] = int(n)
        return Result(cells=cells, hours=hours, days=days, event_ids=events, sequences=sequences, late=late,
                      summary=summary, closed_before=self.closed_before, rollups=rollups)

    def _summary(self, cells: pd.DataFrame, sequences: pd.DataFrame, late: pd.DataFrame) -> dict[str, int]:
        summary = {v.value: 0 for v in Verdict}
        for verdict, n in cells["verdict"].value_counts().items():
            summary[str(verdict)] = int(n)
        # Minutes of hours that were never drilled all agree and are closed: count them as ok.
        (undrilled,) = self._sql("""
            select coalesce(sum(minutes), 0) from hours h anti join drill_hours d using (tenant_id, event_type, hour)
        """).fetchone()
        summary[Verdict.OK.value] += int(undrilled)
        # Sequence findings count numbers, not cells: a pending gap is not a pending cell.
        summary["sequence_pending"] = summary["sequence_explained"] = 0
        if len(sequences):
            for verdict, group in sequences.groupby("verdict"):
                key = {Verdict.PENDING.value: "sequence_pending", "explained": "sequence_explained"}.get(str(verdict), str(verdict))
                summary[key] = summary.get(key, 0) + int(group["missing"].sum())
        summary["late_events"] = int(late["late"].sum()) if len(late) else 0
        summary["cells"] = sum(summary[v.value] for v in PRECEDENCE)
        return summary
