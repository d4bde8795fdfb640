{#-
    SQL that differs between the warehouses but is not about JSON: dates in the reporting time
    zone, date spines, the value at the latest row, ordered text aggregation, splitting text,
    byte order, type names and text literals. Dispatched per adapter like macros/json.sql.
-#}

{#- ---------------------------------------------------------------------------- local_date -#}

{% macro local_date(timestamp_expression) -%}
    {#- The calendar date of a timestamp with time zone in the reporting time zone
        (`reporting_timezone()`). -#}
    {{ return(adapter.dispatch('local_date', 'flagsmith_warehouse')(
        timestamp_expression, flagsmith_warehouse.reporting_timezone()
    )) }}
{%- endmacro %}

{% macro default__local_date(timestamp_expression, timezone) -%}
    {#- `at time zone '<zone>'` turns a timestamp with time zone into that zone's wall-clock time
        on DuckDB and Postgres alike, whatever the session's time zone. -#}
    cast(({{ timestamp_expression }}) at time zone '{{ timezone }}' as date)
{%- endmacro %}

{% macro spark__local_date(timestamp_expression, timezone) -%}
    {#- Spark's timestamp is an instant; from_utc_timestamp gives the zone's wall-clock time of
        it (the session time zone is UTC: profiles.yml). -#}
    to_date(from_utc_timestamp({{ timestamp_expression }}, '{{ timezone }}'))
{%- endmacro %}

{#- ------------------------------------------------------------------------- dates_between -#}

{% macro dates_between(start_date, end_date, alias) -%}
    {#- A lateral join adding one row per calendar date from start_date to end_date (both
        included) as column `<alias>.spine_date`. -#}
    {{ return(adapter.dispatch('dates_between', 'flagsmith_warehouse')(
        start_date, end_date, alias
    )) }}
{%- endmacro %}

{% macro default__dates_between(start_date, end_date, alias) -%}
    {#- generate_series over timestamps, correlated with the row on its left: DuckDB and
        Postgres both take it in the from clause. -#}
    cross join generate_series(
        cast({{ start_date }} as timestamp), cast({{ end_date }} as timestamp), interval '1 day'
    ) as {{ alias }} (spine_date)
{%- endmacro %}

{% macro spark__dates_between(start_date, end_date, alias) -%}
    cross join lateral explode(
        sequence(to_date({{ start_date }}), to_date({{ end_date }}), interval 1 day)
    ) as {{ alias }} (spine_date)
{%- endmacro %}

{#- ------------------------------------------------------------ value_at_latest / earliest -#}

{% macro value_at_latest(value, order_by) -%}
    {{ return(adapter.dispatch('value_at_latest', 'flagsmith_warehouse')(value, order_by, true)) }}
{%- endmacro %}

{% macro value_at_earliest(value, order_by) -%}
    {{ return(adapter.dispatch('value_at_latest', 'flagsmith_warehouse')(value, order_by, false)) }}
{%- endmacro %}

{% macro default__value_at_latest(value, order_by, latest) -%}
    {#- Aggregate: `value` of the row that sorts last (or first) by the columns in `order_by`.
        Standard SQL through an ordered array_agg; DuckDB has a faster native aggregate. -#}
    (array_agg({{ value }} order by
        {%- for column in order_by %} {{ column }} {{ 'desc' if latest else 'asc' }}
            {{- ',' if not loop.last }}{% endfor -%}
    ))[1]
{%- endmacro %}

{% macro duckdb__value_at_latest(value, order_by, latest) -%}
    {#- the _null variants return a null value when that is the latest row's (plain arg_max
        would skip it) -#}
    {{ 'arg_max_null' if latest else 'arg_min_null' }}({{ value }}, ({{ order_by | join(', ') }}))
{%- endmacro %}

{% macro spark__value_at_latest(value, order_by, latest) -%}
    {#- max_by/min_by keep a null value when that is the chosen row's -#}
    {{ 'max_by' if latest else 'min_by' }}({{ value }}, struct({{ order_by | join(', ') }}))
{%- endmacro %}

{#- -------------------------------------------------------------------- ordered_string_agg -#}

{% macro ordered_string_agg(expression, separator, order_by) -%}
    {#- Aggregate: the texts joined with `separator`, in the order of `order_by`. -#}
    {{ return(adapter.dispatch('ordered_string_agg', 'flagsmith_warehouse')(
        expression, separator, order_by
    )) }}
{%- endmacro %}

{% macro default__ordered_string_agg(expression, separator, order_by) -%}
    string_agg({{ expression }}, '{{ separator }}' order by {{ order_by }})
{%- endmacro %}

{% macro spark__ordered_string_agg(expression, separator, order_by) -%}
    listagg({{ expression }}, '{{ separator }}') within group (order by {{ order_by }})
{%- endmacro %}

{#- ---------------------------------------------------------------------------- split_text -#}

{% macro split_text(expression, separator) -%}
    {#- A set-returning select-list expression: one row per part of the text, split at the
        separator (no row for null text). -#}
    {{ return(adapter.dispatch('split_text', 'flagsmith_warehouse')(expression, separator)) }}
{%- endmacro %}

{% macro default__split_text(expression, separator) -%}
    unnest(string_to_array({{ expression }}, '{{ separator }}'))
{%- endmacro %}

{% macro spark__split_text(expression, separator) -%}
    {#- split takes a regular expression: the separator is quoted -#}
    explode(split({{ expression }}, '\\Q{{ separator }}\\E'))
{%- endmacro %}

{#- ------------------------------------------------------------------------- in_byte_order -#}

{% macro in_byte_order(expression) -%}
    {#- The text for an `order by` that sorts by bytes, whatever the database's collation. -#}
    {{ return(adapter.dispatch('in_byte_order', 'flagsmith_warehouse')(expression)) }}
{%- endmacro %}

{% macro default__in_byte_order(expression) -%}
    {#- DuckDB compares text by bytes unless a collation is configured -#}
    {{ expression }}
{%- endmacro %}

{% macro postgres__in_byte_order(expression) -%}
    {{ expression }} collate "C"
{%- endmacro %}

{#- ------------------------------------------------------------------------------ sql_type -#}

{% macro sql_type(name) -%}
    {#- The warehouse's name for a portable SQL type (text, varchar, double precision, bigint,
        boolean, timestamp with time zone, date). -#}
    {{ return(adapter.dispatch('sql_type', 'flagsmith_warehouse')(name)) }}
{%- endmacro %}

{% macro default__sql_type(name) -%}
    {{ return(name) }}
{%- endmacro %}

{% macro spark__sql_type(name) -%}
    {%- set names = {
        'text': 'string',
        'varchar': 'string',
        'double precision': 'double',
        'timestamp with time zone': 'timestamp',
    } -%}
    {{ return(names.get(name | lower, name)) }}
{%- endmacro %}

{#- ------------------------------------------------------------------------- text_literals -#}

{% macro text_literals(values) -%}
    {%- set quoted = [] -%}
    {%- for value in values -%}
        {%- do quoted.append("'" ~ (value | replace("'", "''")) ~ "'") -%}
    {%- endfor -%}
    {{ quoted | join(', ') }}
{%- endmacro %}
