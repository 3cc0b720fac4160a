{{ config(unique_key=['tenant_id', 'event_type', 'minute_at']) }}
-- Events per tenant × event type × minute of received_at (the window every layer reconciles on).
-- Incremental: recounts the minutes with events loaded since the last run or in the lookback window.
with

events as (

    select * from {{ ref('fct_events') }}

),

{% if is_incremental() %}
watermark as (

    {{ incremental_watermark('minute_at') }}

),

touched as (

    select distinct events.tenant_id, events.event_type, events.received_minute
    from events
    cross join watermark
    where events.loaded_at > watermark.max_loaded_at
       or events.received_at >= watermark.lookback_from

),

window_events as (

    select events.*
    from events
    inner join touched
        on touched.tenant_id = events.tenant_id
        and touched.event_type = events.event_type
        and touched.received_minute = events.received_minute

),
{% else %}
window_events as (

    select * from events

),
{% endif %}

counts as (

    select
        tenant_id,
        event_type,
        received_minute as minute_at,
        count(*) as event_count,
        count(distinct anonymous_id) as unique_visitors,
        max(loaded_at) as loaded_at
    from window_events
    group by tenant_id, event_type, received_minute

),

final as (

    {{ changed_rows('counts') }}

)

select * from final
