-- Behavioural segment memberships, from the SAME rules the speed layer reads (streaming/segments.yaml,
-- turned into the segment_rules / segment_rule_conditions seeds). A visitor is a member when, within
-- the trailing window_hours ending at the evaluation time, it has at least min_count events of the
-- rule's event type whose properties equal every condition of the rule.
--
-- A table rebuilt on every run, not incremental: the evaluation time moves with the newest event, so
-- every membership's window moves with it. Only the events of the longest window are read.
with

events as (

    select * from {{ ref('fct_events') }}

),

newest as (

    -- read apart from `events`: a CTE read twice is materialized whole by DuckDB
    select max(received_at) as received_at from {{ ref('fct_events') }}

),

rules as (

    select * from {{ ref('segment_rules') }}

),

conditions as (

    select * from {{ ref('segment_rule_conditions') }}

),

evaluation as (

    select
    {%- if var('tally__segments_as_of') %}
        {{ parse_utc_timestamp("'" ~ var('tally__segments_as_of') ~ "'") }} as as_of
    {%- else %}
        received_at as as_of from newest
    {%- endif %}

),

candidate_events as (

    select events.event_id, events.tenant_id, events.anonymous_id, events.received_at, events.properties,
           rules.segment_name, rules.min_count, rules.condition_count, evaluation.as_of
    from events
    inner join rules on rules.event_type = events.event_type
    cross join evaluation
    where events.received_at > {{ dbt.dateadd('hour', '-1 * rules.window_hours', 'evaluation.as_of') }}
      and events.received_at <= evaluation.as_of

),

qualifying_events as (

    -- an event qualifies when it meets every condition of its rule (none for an unconditional rule);
    -- the correlated count reads the few conditions per event, no join back to the events
    select tenant_id, anonymous_id, segment_name, min_count, received_at, as_of
    from candidate_events
    where condition_count = (
        select count(*)
        from conditions
        where conditions.segment_name = candidate_events.segment_name
          and {{ json_get_string('candidate_events.properties', 'conditions.property') }} = conditions.value
    )

),

final as (

    select
        tenant_id,
        anonymous_id,
        segment_name,
        count(*) as qualifying_events,
        min(received_at) as first_qualifying_at,
        max(received_at) as last_qualifying_at,
        max(as_of) as evaluated_at
    from qualifying_events
    group by tenant_id, anonymous_id, segment_name, min_count
    having count(*) >= min_count

)

select * from final
