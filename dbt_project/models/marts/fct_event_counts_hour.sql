{{ config(unique_key=['tenant_id', 'event_type', 'hour_at']) }}
-- Hour roll-up of the minute counts; unique visitors are counted from events (distincts do not add up).
{{ event_counts_rollup('hour', 'fct_event_counts_minute', 'minute_at') }}
