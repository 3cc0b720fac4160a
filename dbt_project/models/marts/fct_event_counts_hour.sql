-- Hour roll-up of the minute counts; unique visitors are counted from events (distincts do not add up).
with

minutes as (

    select * from {{ ref('fct_event_counts_minute') }}

),

events as (

    select * from {{ ref('fct_events') }}

),

counts as (

    select
        tenant_id,
        event_type,
        {{ dbt.date_trunc('hour', 'minute_at') }} as hour_at,
        sum(event_count) as event_count
    from minutes
    group by 1, 2, 3

),

visitors as (

    select tenant_id, event_type, received_hour as hour_at, count(distinct anonymous_id) as unique_visitors
    from events
    group by 1, 2, 3

),

final as (

    select counts.tenant_id, counts.event_type, counts.hour_at, counts.event_count, visitors.unique_visitors
    from counts
    inner join visitors
        on visitors.tenant_id = counts.tenant_id
        and visitors.event_type = counts.event_type
        and visitors.hour_at = counts.hour_at

)

select * from final
