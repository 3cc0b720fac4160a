{{ config(unique_key='user_key') }}
-- One row per known user of a tenant: when they were first identified and what they did.
-- Incremental: recomputes the users with events loaded since the last run or received in the lookback
-- window, the users a visitor was stitched to since, and the users who lost a visitor to an earlier
-- identify of another user (their visitor count no longer matches the identities).
with

identities as (

    select * from {{ ref('int_identities_stitched') }}

),

events as (

    select * from {{ ref('fct_events') }}

),

{% if is_incremental() %}
watermark as (

    {{ incremental_watermark('last_seen_at') }}

),

identity_counts as (

    select tenant_id, user_id, count(*) as anonymous_ids
    from identities
    group by 1, 2

),

touched as (

    select events.tenant_id, events.stitched_user_id as user_id
    from events
    cross join watermark
    where events.stitched_user_id is not null
      and (events.loaded_at > watermark.max_loaded_at or events.received_at >= watermark.lookback_from)

    union

    select identities.tenant_id, identities.user_id
    from identities
    cross join watermark
    where identities.loaded_at > watermark.max_loaded_at

    union

    select held.tenant_id, held.user_id
    from {{ this }} held
    left join identity_counts
        on identity_counts.tenant_id = held.tenant_id
        and identity_counts.user_id = held.user_id
    where held.anonymous_ids <> coalesce(identity_counts.anonymous_ids, 0)

),

user_event_rows as (

    select events.*
    from events
    inner join touched
        on touched.tenant_id = events.tenant_id
        and touched.user_id = events.stitched_user_id

),

user_identity_rows as (

    select identities.*
    from identities
    inner join touched
        on touched.tenant_id = identities.tenant_id
        and touched.user_id = identities.user_id

),
{% else %}
user_event_rows as (

    select * from events
    where stitched_user_id is not null

),

user_identity_rows as (

    select * from identities

),
{% endif %}

user_events as (

    select
        tenant_id,
        stitched_user_id as user_id,
        min(received_at) as first_seen_at,
        max(received_at) as last_seen_at,
        count(*) as event_count,
        max(loaded_at) as loaded_at
    from user_event_rows
    group by 1, 2

),

user_identities as (

    select tenant_id, user_id, min(identified_at) as first_identified_at, count(*) as anonymous_ids
    from user_identity_rows
    group by 1, 2

),

users as (

    select
        {{ dbt.concat(['user_events.tenant_id', "'/'", 'user_events.user_id']) }} as user_key,
        user_events.tenant_id,
        user_events.user_id,
        user_identities.first_identified_at,
        coalesce(user_identities.anonymous_ids, 0) as anonymous_ids,
        user_events.first_seen_at,
        user_events.last_seen_at,
        user_events.event_count,
        user_events.loaded_at
    from user_events
    left join user_identities
        on user_identities.tenant_id = user_events.tenant_id
        and user_identities.user_id = user_events.user_id

),

final as (

    {{ changed_rows('users') }}

)

select * from final
