-- One row per tenant that sent at least one valid event.
with

events as (

    select * from {{ ref('fct_events') }}

),

final as (

    select
        tenant_id,
        min(received_at) as first_event_at,
        max(received_at) as last_event_at,
        count(*) as event_count,
        count(distinct anonymous_id) as visitors,
        count(distinct stitched_user_id) as users
    from events
    group by tenant_id

)

select * from final
