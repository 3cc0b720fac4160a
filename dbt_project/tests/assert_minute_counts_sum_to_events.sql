{{ config(meta={'dagster': {'ref': {'name': 'fct_event_counts_minute'}}}) }}
-- Invariant: the minute counts add up to the de-duplicated events, per tenant and event type.
with events as (
    select tenant_id, event_type, count(*) as n from {{ ref('fct_events') }} group by 1, 2
),
minutes as (
    select tenant_id, event_type, sum(event_count) as n from {{ ref('fct_event_counts_minute') }} group by 1, 2
)
select coalesce(e.tenant_id, m.tenant_id) as tenant_id, coalesce(e.event_type, m.event_type) as event_type,
       e.n as events, m.n as minute_total
from events e
full outer join minutes m on m.tenant_id = e.tenant_id and m.event_type = e.event_type
where e.n is null or m.n is null or e.n <> m.n
