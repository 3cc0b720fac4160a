{#-
    Emulator-only overrides, active only for the `emulator` target (the Snowflake emulator the CI suite
    runs, tests/snowflake/). On every other target each macro returns dbt-snowflake's own SQL unchanged
    (`dbt.<name>` is the adapter's implementation), so production never runs emulator shims.

    What the emulator lacks, measured with fakesnow 0.12.1 (4 and 7 override tally's own macros, the rest dbt-snowflake's):
    1. an explicit `begin; <dml>; commit;` around incremental DML;
    2. unqualified column names in MERGE's `insert ... values (...)` (it needs DBT_INTERNAL_SOURCE.col);
    3. temporary tables in a named database/schema (DuckDB keeps them in its own `temp` catalog).
-#}

{% macro snowflake_dml_explicit_transaction(dml) %}
    {%- if target.name == 'emulator' -%}
        {{ return(dml) }}
    {%- endif -%}
    {{ return(dbt.snowflake_dml_explicit_transaction(dml)) }}
{% endmacro %}


{#- The first argument is not called `target`: that would hide the profile's target. -#}
{% macro snowflake__get_merge_sql(target_relation, source_sql, unique_key, dest_columns, incremental_predicates) -%}
    {%- set sql = dbt.snowflake__get_merge_sql(target_relation, source_sql, unique_key, dest_columns, incremental_predicates) -%}
    {%- if target.name != 'emulator' or unique_key is none -%}
        {{ return(sql) }}
    {%- endif -%}
    {%- set names = dest_columns | map(attribute='name') | list -%}
    {%- set plain = get_quoted_csv(names) -%}
    {%- set qualified = [] -%}
    {%- for name in plain.split(', ') -%}
        {%- do qualified.append('DBT_INTERNAL_SOURCE.' ~ name | trim) -%}
    {%- endfor -%}
    {%- set head, tail = sql.rsplit('values', 1) -%}
    {{ return(head ~ 'values' ~ tail.replace(plain, qualified | join(', '), 1)) }}
{%- endmacro %}


{% macro snowflake__create_table_as(temporary, relation, compiled_code, language='sql') -%}
    {%- if target.name == 'emulator' and temporary -%}
        {{ return(dbt.snowflake__create_table_as(false, relation, compiled_code, language)) }}
    {%- endif -%}
    {{ return(dbt.snowflake__create_table_as(temporary, relation, compiled_code, language)) }}
{%- endmacro %}


{#- 4. `to_timestamp_tz()`: the emulator has no such function; a cast to timestamp_tz parses the same
    RFC 3339 text the same way on Snowflake (TIMESTAMP_TZ_INPUT_FORMAT AUTO), and the emulator runs it.
    Removable once cross_db.sql's default__parse_utc_timestamp uses the cast itself. -#}
{% macro snowflake__parse_utc_timestamp(expr) -%}
    {%- if target.name == 'emulator' -%}
        convert_timezone('UTC', cast({{ expr }} as timestamp_tz))::timestamp_ntz
    {%- else -%}
        {{ default__parse_utc_timestamp(expr) }}
    {%- endif -%}
{%- endmacro %}


{#- 5. Column comments (`alter table ... alter "col" comment $$...$$`, from persist_docs): the emulator
    cannot parse them. Table comments still apply; an empty string makes persist_docs skip the columns. -#}
{% macro snowflake__alter_column_comment(relation, column_dict) -%}
    {%- if target.name == 'emulator' -%}
        {{ return('') }}
    {%- endif -%}
    {{ return(dbt.snowflake__alter_column_comment(relation, column_dict)) }}
{%- endmacro %}


{#- 6. Table comments containing a single quote: the emulator copies the $$-quoted text into a quoted
    string of its own without escaping it, fails, and answers HTTP 500, which the connector retries for
    minutes. Doubling the quotes gives it the escaping it lacks. -#}
{% macro snowflake__alter_relation_comment(relation, relation_comment) -%}
    {%- if target.name == 'emulator' -%}
        {{ return(dbt.snowflake__alter_relation_comment(relation, relation_comment | replace("'", "''"))) }}
    {%- endif -%}
    {{ return(dbt.snowflake__alter_relation_comment(relation, relation_comment)) }}
{%- endmacro %}


{#- 7. `get(variant, key)::varchar` keeps a string's JSON quotes on the emulator ('"pro"' where
    Snowflake gives 'pro'), so property conditions never match there. json_extract_path_text gives
    the bare text on the emulator (segment rule properties are plain keys, not paths). -#}
{% macro snowflake__json_get_string(json_expr, key_expr) -%}
    {%- if target.name == 'emulator' -%}
        json_extract_path_text(to_json({{ json_expr }}), {{ key_expr }})
    {%- else -%}
        {{ default__json_get_string(json_expr, key_expr) }}
    {%- endif -%}
{%- endmacro %}
