-- Records that failed the event contract: kept visible with their reason and exact bytes.
with

source as (

    select * from {{ source('kinesis', 'dead_letters') }}

),

final as (

    select
        _shard_id as shard_id,
        _sequence_number as sequence_number,
        reason,
        detail,
        raw_base64,
        _partition_key as partition_key,
        _arrival_at as arrived_at,
        {{ dbt.date_trunc('minute', '_arrival_at') }} as arrived_minute,
        _archive_key as archive_key,
        _loaded_at as loaded_at

    from source

)

select * from final
