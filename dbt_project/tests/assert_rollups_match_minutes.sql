{{ config(meta={'dagster': {'ref': {'name': 'fct_event_counts_day'}}}) }}
-- Invariant: hour and day roll-ups hold exactly the events of their minutes.
with minutes as (select sum(event_count) as n from {{ ref('fct_event_counts_minute') }}),
hours as (select sum(event_count) as n from {{ ref('fct_event_counts_hour') }}),
days as (select sum(event_count) as n from {{ ref('fct_event_counts_day') }})
select minutes.n as minute_total, hours.n as hour_total, days.n as day_total
from minutes cross join hours cross join days
where minutes.n <> hours.n or hours.n <> days.n
