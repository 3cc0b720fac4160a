{{ config(meta={'dagster': {'ref': {'name': 'fct_events'}}}) }}
-- Invariant: de-duplication keeps exactly one row per distinct event_id of the raw table.
with raw_ids as (select count(distinct event_id) as n from {{ source('kinesis', 'events') }}),
facts as (select count(*) as n from {{ ref('fct_events') }})
select raw_ids.n as raw_distinct, facts.n as fct_rows
from raw_ids cross join facts
where raw_ids.n <> facts.n
