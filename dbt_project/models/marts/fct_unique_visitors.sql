{{ config(unique_key=['tenant_id', 'grain', 'window_start']) }}
-- Distinct visitors (anonymous_id) per tenant and hour or day, over all event types.
-- Incremental: recounts the tenants' hours and days with events loaded since the last run or received
-- in the lookback window.
with

events as (

    select * from {{ ref('fct_events') }}

),

{% if is_incremental() %}
watermark as (

    {{ incremental_watermark('window_start') }}

),

touched_hours as (

    select distinct events.tenant_id, events.received_hour
    from events
    cross join watermark
    where events.loaded_at > watermark.max_loaded_at
       or events.received_at >= watermark.lookback_from

),

touched_days as (

    select distinct tenant_id, cast({{ dbt.date_trunc('day', 'received_hour') }} as date) as received_date
    from touched_hours

),

hour_events as (

    select events.*
    from events
    inner join touched_hours
        on touched_hours.tenant_id = events.tenant_id
        and touched_hours.received_hour = events.received_hour

),

day_events as (

    select events.*
    from events
    inner join touched_days
        on touched_days.tenant_id = events.tenant_id
        and touched_days.received_date = events.received_date

),
{% else %}
hour_events as (

    select * from events

),

day_events as (

    select * from events

),
{% endif %}

hourly as (

    select tenant_id, 'hour' as grain, received_hour as window_start, count(distinct anonymous_id) as unique_visitors,
           max(loaded_at) as loaded_at
    from hour_events
    group by 1, 2, 3

),

daily as (

    select tenant_id, 'day' as grain, cast(received_date as timestamp) as window_start,
           count(distinct anonymous_id) as unique_visitors, max(loaded_at) as loaded_at
    from day_events
    group by 1, 2, 3

),

all_windows as (

    select * from hourly
    union all
    select * from daily

),

final as (

    {{ changed_rows('all_windows') }}

)

select * from final
