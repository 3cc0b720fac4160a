{{ config(unique_key='event_id') }}
-- Valid events, parsed and cast, one row per event_id: a repeated event_id (producer retries, a
-- record archived twice) keeps its earliest received_at, then its earliest arrival on the stream.
--
-- A table, incremental (not a view like the other staging model): every consumer and test of a view
-- would re-run the de-duplication over the whole raw table. A run de-duplicates again only the event_ids
-- with a copy this table has not seen: loaded since the last run, or (late data, see
-- `tally__lookback_hours`) any copy in the archive hours of the lookback window that is not a kept copy.
-- All copies of those event_ids take part, so the kept copy is the one a full build keeps.
with

source as (

    select * from {{ source('kinesis', 'events') }}

),

{% if is_incremental() %}
watermark as (

    select
        max(loaded_at) as max_loaded_at,
        {{ dbt.date_trunc('hour', dbt.dateadd('hour', -1 * var('tally__lookback_hours') | int, 'max(received_at)')) }}
            as lookback_from
    from {{ this }}

),

touched as (

    select source.event_id
    from source
    cross join watermark
    where source._loaded_at > watermark.max_loaded_at
       or (
           source._archive_hour >= watermark.lookback_from
           and not exists (
               select 1 from {{ this }} kept
               where kept.shard_id = source._shard_id and kept.sequence_number = source._sequence_number
           )
       )

),

copies as (

    select * from source
    where event_id in (select event_id from touched)

),
{% else %}
copies as (

    select * from source

),
{% endif %}

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

    from copies

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
