"""Sequence-gap analysis per collector and tenant: what never reached the stream, and what was sent twice.

Every collector numbers its events 1, 2, 3, ... per tenant (``source_seq`` counts per ``source_id`` and
``tenant_id``). Over the numbers the layers hold (warehouse raw rows, archive lines of drilled hours, the
dead letters whose numbers are readable, and the stream records between the layers' positions that
reconciliation read), a number missing between two held numbers of one (source, tenant) is an event
lost upstream of the stream (producer or collector): verdict ``upstream_gap``, naming the source, the
tenant, the missing numbers and the minutes of the two neighbours, which bracket when it was received.
One number carried by two different event_ids is ``upstream_duplicate`` (the same id delivered twice is
a harmless redelivery that de-duplication absorbs, and is not reported here).

A rejected record still holds its number (it reached the stream and is a dead letter), and a record
whose numbers cannot be read holds none, so it can neither fill nor open a gap.

A gap is *explained* (not upstream) when an ``archive_missing`` cell of its tenant lies inside its
bracket (the numbers were in an archive object that is gone) or a cell with ``forgotten`` events (a
deletion request removed them), and *pending* while its bracket is not closed or holds a cell of its
tenant that is pending (a layer that has not reached those minutes may still hold the numbers).

The evidence may extend past the judged range (the service reads ``SEQUENCE_MARGIN_MIN`` minutes on
each side), so a gap across the range's edge is still seen; each finding belongs to the range that
holds its later neighbour, so adjacent hourly partitions never report the same gap twice.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from streaming.reconcile.model import Verdict

#: Minutes of sequence evidence read on each side of the judged range.
SEQUENCE_MARGIN_MIN = 15


#: Columns of the sequence evidence: one row per (number, event or dead letter) a layer holds.
HELD_COLUMNS = ("source_id", "tenant_id", "source_seq", "event_id", "minute")


def analyse_sequences(con: duckdb.DuckDBPyConnection, held_table: str, judged_table: str,
                      lo: int, hi: int, closed_min: int) -> pd.DataFrame:
    """Gaps and conflicting repeats per (source, tenant) over ``held_table`` (HELD_COLUMNS; a dead letter's
    ``event_id`` may be null). Table names are fixed identifiers chosen by the engine."""
    for name in (held_table, judged_table):
        if not name.isidentifier():
            raise ValueError(f"not a table name: {name!r}")
    gap = Verdict.UPSTREAM_GAP.value
    return con.execute(f"""
        with held as (
            select distinct source_id::varchar as source_id, tenant_id::varchar as tenant_id,
                            source_seq::bigint as source_seq, event_id::varchar event_id, minute::bigint as minute
            from {held_table}
            where source_id is not null and tenant_id is not null and source_seq is not null
        ),
        numbers as (
            select source_id, tenant_id, source_seq, min(minute) as minute, count(distinct event_id) as ids,
                   list(distinct event_id order by event_id) filter (where event_id is not null) as event_ids
            from held group by all
        ),
        -- A number held only by a dead letter has no minute: the bracket runs to the nearest numbers
        -- that have one.
        ordered as (
            select *, lag(source_seq) over (partition by source_id, tenant_id order by source_seq) as prev_seq,
                   last_value(minute ignore nulls) over (
                       partition by source_id, tenant_id order by source_seq
                       rows between unbounded preceding and 1 preceding) as prev_minute,
                   first_value(minute ignore nulls) over (
                       partition by source_id, tenant_id order by source_seq
                       rows between current row and unbounded following) as next_minute
            from numbers
        ),
        gaps as (
            select source_id, tenant_id, prev_seq + 1 as first_missing, source_seq - 1 as last_missing,
                   source_seq - prev_seq - 1 as missing,
                   least(prev_minute, next_minute) as min_minute, greatest(prev_minute, next_minute) as max_minute,
                   []::varchar[] as event_ids, '{gap}' as kind
            from ordered where source_seq - prev_seq > 1
        ),
        repeats as (
            select source_id, tenant_id, source_seq, source_seq, ids - 1, minute, minute, event_ids,
                   '{Verdict.UPSTREAM_DUPLICATE.value}'
            from numbers where ids > 1
        ),
        findings as (select * from gaps union all select * from repeats),
        judged as (
            select f.*,
                   exists (select 1 from {judged_table} j
                           where j.tenant_id = f.tenant_id and j.minute between f.min_minute and f.max_minute
                             and list_contains(j.findings, '{Verdict.ARCHIVE_MISSING.value}')) as in_archive_missing,
                   exists (select 1 from {judged_table} j
                           where j.tenant_id = f.tenant_id and j.minute between f.min_minute and f.max_minute
                             and j.f > 0) as in_forgotten,
                   (select min(j.pending_reason) from {judged_table} j
                    where j.tenant_id = f.tenant_id and j.minute between f.min_minute and f.max_minute
                      and j.verdict = '{Verdict.PENDING.value}') as pending_cell
            from findings f
        )
        select source_id, tenant_id, first_missing, last_missing, missing, min_minute, max_minute,
               case when kind = '{gap}' and (in_archive_missing or in_forgotten) then 'explained'
                    when max_minute + 1 > $closed_min then '{Verdict.PENDING.value}'
                    when kind = '{gap}' and pending_cell is not null then '{Verdict.PENDING.value}'
                    else kind end as verdict,
               case when kind = '{gap}' and in_archive_missing then '{Verdict.ARCHIVE_MISSING.value}'
                    when kind = '{gap}' and in_forgotten then 'forgotten' end as explained_by,
               case when max_minute + 1 > $closed_min then 'window not closed'
                    when kind = '{gap}' and pending_cell is not null then pending_cell end as pending_reason,
               coalesce(event_ids, []::varchar[]) as event_ids
        from judged
        where max_minute >= $lo and max_minute < $hi
        order by source_id, tenant_id, first_missing
    """, {"lo": lo, "hi": hi, "closed_min": closed_min}).df()
