-- Identity stitching: every anonymous_id that an identify event linked to a user_id, with the first
-- such link (by received_at). fct_events applies it to the visitor's earlier anonymous events too.
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

first_link as (

    select *
    from identifies
    qualify row_number() over (
        partition by tenant_id, anonymous_id
        order by identified_at, user_id
    ) = 1

),

final as (

    select
        tenant_id,
        anonymous_id,
        user_id,
        identified_at,
        loaded_at
    from first_link

)

select * from final
