-- Events per tenant × event type × minute of received_at (the window every layer reconciles on).
with

events as (

    select * from {{ ref('fct_events') }}

),

final as (

    select
        tenant_id,
        event_type,
        received_minute as minute_at,
        count(*) as event_count,
        count(distinct anonymous_id) as unique_visitors
    from events
    group by tenant_id, event_type, received_minute

)

select * from final
