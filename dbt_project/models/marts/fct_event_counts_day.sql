-- Day roll-up of the hour counts; unique visitors are counted from events (distincts do not add up).
with

hours as (

    select * from {{ ref('fct_event_counts_hour') }}

),

events as (

    select * from {{ ref('fct_events') }}

),

counts as (

    select
        tenant_id,
        event_type,
        cast({{ dbt.date_trunc('day', 'hour_at') }} as date) as day_at,
        sum(event_count) as event_count
    from hours
    group by 1, 2, 3

),

visitors as (

    select tenant_id, event_type, received_date as day_at, count(distinct anonymous_id) as unique_visitors
    from events
    group by 1, 2, 3

),

final as (

    select counts.tenant_id, counts.event_type, counts.day_at, counts.event_count, visitors.unique_visitors
    from counts
    inner join visitors
        on visitors.tenant_id = counts.tenant_id
        and visitors.event_type = counts.event_type
        and visitors.day_at = counts.day_at

)

select * from final
