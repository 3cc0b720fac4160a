{{ config(unique_key=['tenant_id', 'event_type', 'day_at']) }}
-- Day roll-up of the hour counts; unique visitors are counted from events (distincts do not add up).
{{ event_counts_rollup('day', 'fct_event_counts_hour', 'hour_at') }}
