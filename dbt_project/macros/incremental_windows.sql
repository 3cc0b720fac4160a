{#-
    Incremental marts recompute only the windows (minutes, hours, days, tenants, users) that can have
    changed since their last run, then write only the rows that differ from those held. A window can have
    changed when it holds an event loaded since the mart's newest `loaded_at`, or lies in the last
    `tally__lookback_hours` hours (late data, as in fct_events).
-#}

{#- The mart's own watermark: its newest loaded_at, and the start of the lookback window: events received
    since then touch their windows again (`period`: the mart's window column, the newest one held). -#}
{% macro incremental_watermark(period) -%}
    select
        max(loaded_at) as max_loaded_at,
        {{ dbt.dateadd('hour', -1 * var('tally__lookback_hours') | int, 'max(' ~ period ~ ')') }} as lookback_from
    from {{ this }}
{%- endmacro %}

{#- `rows` minus the rows the mart already holds unchanged (on a full build: all of `rows`). -#}
{% macro changed_rows(rows) -%}
    select * from {{ rows }}
    {%- if is_incremental() %}
    except
    select * from {{ this }}
    {%- endif %}
{%- endmacro %}
