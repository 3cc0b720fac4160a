{{ config(unique_key='tenant_id') }}
-- One row per tenant that sent at least one valid event.
-- Incremental: recomputes the tenants with events loaded since the last run or received in the
-- lookback window, and the tenants of visitors stitched since (their users change).
with

events as (

    select * from {{ ref('fct_events') }}

),

identities as (

    select * from {{ ref('int_identities_stitched') }}

),

{% if is_incremental() %}
watermark as (

    {{ incremental_watermark('last_event_at') }}

),

touched as (

    select events.tenant_id
    from events
    cross join watermark
    where events.loaded_at > watermark.max_loaded_at
       or events.received_at >= watermark.lookback_from

    union

    select identities.tenant_id
    from identities
    cross join watermark
    where identities.loaded_at > watermark.max_loaded_at

),

tenant_events as (

    select * from events
    where tenant_id in (select tenant_id from touched)

),
{% else %}
tenant_events as (

    select * from events

),
{% endif %}

tenants as (

    select
        tenant_id,
        min(received_at) as first_event_at,
        max(received_at) as last_event_at,
        count(*) as event_count,
        count(distinct anonymous_id) as visitors,
        count(distinct stitched_user_id) as users,
        max(loaded_at) as loaded_at
    from tenant_events
    group by tenant_id

),

final as (

    {{ changed_rows('tenants') }}

)

select * from final
