{{ config(unique_key='event_id') }}
-- One row per event (de-duplicated), with the visitor's stitched user.
--
-- Incremental by hour: a run re-reads every event loaded since the last run (a re-loaded archive hour,
-- late objects) and the last `tally__lookback_hours` hours of received_at, plus every earlier event of
-- a visitor who identified in that window, so stitching reaches back to their anonymous events. Of
-- those, only rows that differ from the row held (new, re-loaded, or stitched to another user) are
-- written: the lookback re-reads hours that are mostly unchanged.
with

events as (

    select * from {{ ref('stg_kinesis__events') }}

),

identities as (

    select * from {{ ref('int_identities_stitched') }}

),

{% if is_incremental() %}
watermark as (

    select
        max(loaded_at) as max_loaded_at,
        {{ dbt.dateadd('hour', -1 * var('tally__lookback_hours') | int, 'max(received_at)') }} as lookback_from
    from {{ this }}

),

newly_identified as (

    select identities.tenant_id, identities.anonymous_id
    from identities
    cross join watermark
    where identities.loaded_at > watermark.max_loaded_at
       or identities.identified_at >= watermark.lookback_from

),

changed as (

    select events.*
    from events
    cross join watermark
    where events.loaded_at > watermark.max_loaded_at
       or events.received_at >= watermark.lookback_from
       or exists (
           select 1 from newly_identified n
           where n.tenant_id = events.tenant_id and n.anonymous_id = events.anonymous_id
       )

),
{% else %}
changed as (

    select * from events

),
{% endif %}

stitched as (

    select
        changed.event_id,
        changed.tenant_id,
        changed.event_type,
        changed.anonymous_id,
        changed.user_id,
        coalesce(changed.user_id, identities.user_id) as stitched_user_id,
        changed.occurred_at,
        changed.received_at,
        {{ dbt.date_trunc('minute', 'changed.received_at') }} as received_minute,
        {{ dbt.date_trunc('hour', 'changed.received_at') }} as received_hour,
        cast({{ dbt.date_trunc('day', 'changed.received_at') }} as date) as received_date,
        changed.source_id,
        changed.source_seq,
        changed.properties,
        changed.loaded_at

    from changed
    left join identities
        on identities.tenant_id = changed.tenant_id
        and identities.anonymous_id = changed.anonymous_id

),

final as (

    select * from stitched
    {% if is_incremental() %}
    where not exists (
        select 1 from {{ this }} held
        where held.event_id = stitched.event_id
          and held.loaded_at = stitched.loaded_at
          and held.received_at = stitched.received_at
          and held.stitched_user_id is not distinct from stitched.stitched_user_id
    )
    {% endif %}

)

select * from final
