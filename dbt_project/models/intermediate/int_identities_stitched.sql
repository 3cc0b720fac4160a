{{ config(unique_key=['tenant_id', 'anonymous_id']) }}
-- Identity stitching: every anonymous_id that an identify event linked to a user_id, with the first
-- such link (by received_at). fct_events applies it to the visitor's earlier anonymous events too.
--
-- Incremental: a run recomputes the visitors with an identify event that is new to staging since the
-- last run (or received in the lookback window), over all of their identify events: a late identify
-- that is earlier than the one held replaces it, as in a full build.
with

events as (

    select * from {{ ref('stg_kinesis__events') }}

),

identifies as (

    select
        tenant_id,
        anonymous_id,
        user_id,
        received_at as identified_at,
        loaded_at
    from events
    where event_type = 'identify'
      and user_id is not null

),

{% if is_incremental() %}
watermark as (

    select
        max(loaded_at) as max_loaded_at,
        {{ dbt.dateadd('hour', -1 * var('tally__lookback_hours') | int, 'max(identified_at)') }} as lookback_from
    from {{ this }}

),

touched as (

    select distinct identifies.tenant_id, identifies.anonymous_id
    from identifies
    cross join watermark
    where identifies.loaded_at > watermark.max_loaded_at
       or identifies.identified_at >= watermark.lookback_from

),

candidates as (

    select identifies.*
    from identifies
    inner join touched
        on touched.tenant_id = identifies.tenant_id
        and touched.anonymous_id = identifies.anonymous_id

),
{% else %}
candidates as (

    select * from identifies

),
{% endif %}

first_link as (

    select *
    from candidates
    qualify row_number() over (
        partition by tenant_id, anonymous_id
        order by identified_at, user_id
    ) = 1

),

linked as (

    select
        tenant_id,
        anonymous_id,
        user_id,
        identified_at,
        loaded_at
    from first_link

),

final as (

    {{ changed_rows('linked') }}

)

select * from final
