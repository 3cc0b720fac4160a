-- Valid events, parsed and cast, one row per event_id: a repeated event_id (producer retries, a
-- record archived twice) keeps its earliest received_at, then its earliest arrival on the stream.
with

source as (

    select * from {{ source('kinesis', 'events') }}

),

parsed as (

    select
        cast(event_id as varchar) as event_id,
        tenant_id,
        event_type,
        anonymous_id,
        user_id,
        {{ parse_utc_timestamp('occurred_at') }} as occurred_at,
        {{ parse_utc_timestamp('received_at') }} as received_at,
        source_id,
        cast(source_seq as bigint) as source_seq,
        cast(schema_version as integer) as schema_version,
        {{ parse_json('properties') }} as properties,
        _shard_id as shard_id,
        _sequence_number as sequence_number,
        _arrival_at as arrived_at,
        _loaded_at as loaded_at

    from source

),

deduplicated as (

    select *
    from parsed
    qualify row_number() over (
        partition by event_id
        order by received_at, arrived_at, shard_id, sequence_number
    ) = 1

),

final as (

    select * from deduplicated

)

select * from final
