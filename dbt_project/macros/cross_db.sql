{#- SQL that differs between Snowflake (the default implementations) and DuckDB (local). -#}

{#- An RFC 3339 string with any offset -> a UTC timestamp without time zone. -#}
{% macro parse_utc_timestamp(expr) -%}
    {{ return(adapter.dispatch('parse_utc_timestamp', 'tally')(expr)) }}
{%- endmacro %}
{% macro default__parse_utc_timestamp(expr) -%}
    convert_timezone('UTC', to_timestamp_tz({{ expr }}))::timestamp_ntz
{%- endmacro %}
{% macro duckdb__parse_utc_timestamp(expr) -%}
    cast(cast({{ expr }} as timestamptz) at time zone 'UTC' as timestamp)
{%- endmacro %}

{#- JSON text -> the warehouse's semi-structured type (VARIANT on Snowflake, JSON on DuckDB). -#}
{% macro parse_json(expr) -%}
    {{ return(adapter.dispatch('parse_json', 'tally')(expr)) }}
{%- endmacro %}
{% macro default__parse_json(expr) -%}
    parse_json({{ expr }})
{%- endmacro %}
{% macro duckdb__parse_json(expr) -%}
    cast({{ expr }} as json)
{%- endmacro %}

{#- The string value of a top-level key of a JSON/VARIANT value; the key may be a column. -#}
{% macro json_get_string(json_expr, key_expr) -%}
    {{ return(adapter.dispatch('json_get_string', 'tally')(json_expr, key_expr)) }}
{%- endmacro %}
{% macro default__json_get_string(json_expr, key_expr) -%}
    get({{ json_expr }}, {{ key_expr }})::varchar
{%- endmacro %}
{% macro duckdb__json_get_string(json_expr, key_expr) -%}
    json_extract_string({{ json_expr }}, {{ key_expr }})
{%- endmacro %}

{#- A timestamp literal from an ISO-8601 string. -#}
{% macro timestamp_literal(iso) -%}
    {{ return(adapter.dispatch('timestamp_literal', 'tally')(iso)) }}
{%- endmacro %}
{% macro default__timestamp_literal(iso) -%}
    to_timestamp_ntz('{{ iso }}')
{%- endmacro %}
{% macro duckdb__timestamp_literal(iso) -%}
    cast('{{ iso }}' as timestamp)
{%- endmacro %}
