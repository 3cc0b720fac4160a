"""Sequence-gap analysis per ``source_id``: what never reached the stream, and what was sent twice.

Every collector numbers its events 1, 2, 3, ... (``source_seq``). Over the events every readable layer
holds (warehouse raw rows and, for drilled hours, archive lines), a number missing between two held
numbers is an event lost upstream of the stream (producer or collector): verdict ``upstream_gap``. One
number carried by two different event_ids is ``upstream_duplicate`` (the same id delivered twice is a
harmless redelivery that de-duplication absorbs, and is not reported here).

An event that never reached any layer has no tenant or event type anyone can know: a gap is reported
with its source, the missing numbers and the minutes of its two neighbours, which bracket when it was
received. A gap is *explained* (not upstream) when an ``archive_missing`` cell lies inside that bracket
(the numbers were in an archive object that is gone) or a cell with ``forgotten`` events (a deletion
request removed them), and *pending* while its bracket is not closed
(a late event may still arrive).

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


def analyse_sequences(con: duckdb.DuckDBPyConnection, seq_table: str, archive_table: str, judged_table: str,
                      lo: int, hi: int, closed_min: int) -> pd.DataFrame:
    """Gaps and conflicting repeats per source. Table names are fixed identifiers chosen by the engine."""
    for name in (seq_table, archive_table, judged_table):
        if not name.isidentifier():
            raise ValueError(f"not a table name: {name!r}")
    return con.execute(f"""
        with held as (
            select distinct source_id::varchar as source_id, source_seq::bigint as source_seq,
                            event_id::varchar event_id, minute::bigint as minute
            from (select source_id, source_seq, event_id, minute from {seq_table}
                  union all select source_id, source_seq, event_id, minute from {archive_table})
            where source_id is not null and source_seq is not null
        ),
        numbers as (
            select source_id, source_seq, min(minute) as minute, count(distinct event_id) as ids,
                   list(distinct event_id order by event_id) as event_ids
            from held group by all
        ),
        ordered as (
            select *, lag(source_seq) over w as prev_seq, lag(minute) over w as prev_minute
            from numbers window w as (partition by source_id order by source_seq)
        ),
        gaps as (
            select source_id, prev_seq + 1 as first_missing, source_seq - 1 as last_missing,
                   source_seq - prev_seq - 1 as missing,
                   least(prev_minute, minute) as min_minute, greatest(prev_minute, minute) as max_minute,
                   []::varchar[] as event_ids, '{Verdict.UPSTREAM_GAP.value}' as kind
            from ordered where source_seq - prev_seq > 1
        ),
        repeats as (
            select source_id, source_seq, source_seq, ids - 1, minute, minute, event_ids,
                   '{Verdict.UPSTREAM_DUPLICATE.value}'
            from numbers where ids > 1
        ),
        findings as (select * from gaps union all select * from repeats)
        select f.source_id, f.first_missing, f.last_missing, f.missing, f.min_minute, f.max_minute,
               case when f.kind = '{Verdict.UPSTREAM_GAP.value}' and exists (
                        select 1 from {judged_table} j
                        where (list_contains(j.findings, '{Verdict.ARCHIVE_MISSING.value}') or j.f > 0)
                          and j.minute between f.min_minute and f.max_minute) then 'explained'
                    when f.max_minute + 1 > $closed_min then '{Verdict.PENDING.value}'
                    else f.kind end as verdict,
               case when f.kind = '{Verdict.UPSTREAM_GAP.value}' and exists (
                        select 1 from {judged_table} j
                        where list_contains(j.findings, '{Verdict.ARCHIVE_MISSING.value}')
                          and j.minute between f.min_minute and f.max_minute)
                    then '{Verdict.ARCHIVE_MISSING.value}'
                    when f.kind = '{Verdict.UPSTREAM_GAP.value}' and exists (
                        select 1 from {judged_table} j where j.f > 0 and j.minute between f.min_minute and f.max_minute)
                    then 'forgotten' end as explained_by,
               f.event_ids
        from findings f
        where f.max_minute >= $lo and f.max_minute < $hi
        order by f.source_id, f.first_missing
    """, {"lo": lo, "hi": hi, "closed_min": closed_min}).df()
