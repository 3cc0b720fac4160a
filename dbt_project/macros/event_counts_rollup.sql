{#-
    fct_event_counts_hour and fct_event_counts_day: a roll-up of the finer counts (`parent`: the minute
    counts for 'hour', the hour counts for 'day') to `grain`, with the distinct visitors of the period
    counted from the events (distincts do not add up).
    Incremental: recomputes the periods with events loaded since the mart's last run or received in the
    lookback window, and writes the rows that changed.
-#}
{% macro event_counts_rollup(grain, parent, parent_period) -%}
{%- set period = grain ~ '_at' -%}
{%- set events_period = {'hour': 'received_hour', 'day': 'received_date'}[grain] -%}
{%- if grain == 'day' -%}
    {%- set finer_period = 'cast(' ~ dbt.date_trunc('day', 'finer.' ~ parent_period) ~ ' as date)' -%}
{%- else -%}
    {%- set finer_period = dbt.date_trunc(grain, 'finer.' ~ parent_period) -%}
{%- endif -%}
with

finer as (

    select * from {{ ref(parent) }}

),

events as (

    select * from {{ ref('fct_events') }}

),

{% if is_incremental() %}
watermark as (

    {{ incremental_watermark(period) }}

),

touched as (

    select distinct events.tenant_id, events.event_type, events.{{ events_period }} as period_start
    from events
    cross join watermark
    where events.loaded_at > watermark.max_loaded_at
       or events.received_at >= watermark.lookback_from

),
{% endif %}

counts as (

    select
        finer.tenant_id,
        finer.event_type,
        {{ finer_period }} as period_start,
        sum(finer.event_count) as event_count,
        max(finer.loaded_at) as loaded_at
    from finer
    {%- if is_incremental() %}
    inner join touched
        on touched.tenant_id = finer.tenant_id
        and touched.event_type = finer.event_type
        and touched.period_start = {{ finer_period }}
    {%- endif %}
    group by 1, 2, 3

),

visitors as (

    select
        events.tenant_id,
        events.event_type,
        events.{{ events_period }} as period_start,
        count(distinct events.anonymous_id) as unique_visitors
    from events
    {%- if is_incremental() %}
    inner join touched
        on touched.tenant_id = events.tenant_id
        and touched.event_type = events.event_type
        and touched.period_start = events.{{ events_period }}
    {%- endif %}
    group by 1, 2, 3

),

rolled_up as (

    select
        counts.tenant_id,
        counts.event_type,
        counts.period_start as {{ period }},
        counts.event_count,
        visitors.unique_visitors,
        counts.loaded_at
    from counts
    inner join visitors
        on visitors.tenant_id = counts.tenant_id
        and visitors.event_type = counts.event_type
        and visitors.period_start = counts.period_start

),

final as (

    {{ changed_rows('rolled_up') }}

)

select * from final
{%- endmacro %}
