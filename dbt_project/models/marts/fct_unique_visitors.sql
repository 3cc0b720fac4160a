-- Distinct visitors (anonymous_id) per tenant and hour or day, over all event types.
with

events as (

    select * from {{ ref('fct_events') }}

),

hourly as (

    select tenant_id, 'hour' as grain, received_hour as window_start, count(distinct anonymous_id) as unique_visitors
    from events
    group by 1, 2, 3

),

daily as (

    select tenant_id, 'day' as grain, cast(received_date as timestamp) as window_start,
           count(distinct anonymous_id) as unique_visitors
    from events
    group by 1, 2, 3

),

final as (

    select * from hourly
    union all
    select * from daily

)

select * from final
