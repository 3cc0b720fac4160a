-- One row per known user of a tenant: when they were first identified and what they did.
with

identities as (

    select * from {{ ref('int_identities_stitched') }}

),

events as (

    select * from {{ ref('fct_events') }}

),

user_events as (

    select
        tenant_id,
        stitched_user_id as user_id,
        min(received_at) as first_seen_at,
        max(received_at) as last_seen_at,
        count(*) as event_count
    from events
    where stitched_user_id is not null
    group by 1, 2

),

user_identities as (

    select tenant_id, user_id, min(identified_at) as first_identified_at, count(*) as anonymous_ids
    from identities
    group by 1, 2

),

final as (

    select
        {{ dbt.concat(['user_events.tenant_id', "'/'", 'user_events.user_id']) }} as user_key,
        user_events.tenant_id,
        user_events.user_id,
        user_identities.first_identified_at,
        coalesce(user_identities.anonymous_ids, 0) as anonymous_ids,
        user_events.first_seen_at,
        user_events.last_seen_at,
        user_events.event_count
    from user_events
    left join user_identities
        on user_identities.tenant_id = user_events.tenant_id
        and user_identities.user_id = user_events.user_id

)

select * from final
