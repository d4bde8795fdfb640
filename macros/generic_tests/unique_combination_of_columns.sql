{#-
    Fails with one row per duplicated combination. Nulls compare as equal (group by puts them in
    one group), so a key with a nullable part, such as environment_id in flagsmith__identities,
    is tested null-safely.

    With `recent_rows_column` (the large incremental marts pass `transform_batch_at`), only the
    keys of the latest batch are checked, each against the whole table: a scheduled run costs
    what it added, not all history. `--vars '{flagsmith__test_all_history: true}'` or a
    `--full-refresh` build checks every key.
-#}
{% test unique_combination_of_columns(model, combination_of_columns, recent_rows_column=none) %}

{#- a name in double quotes (a reserved word such as "timestamp") is quoted as the warehouse
    quotes identifiers (Spark: backticks) -#}
{%- set columns = [] -%}
{%- for column in combination_of_columns -%}
    {%- if column.startswith('"') and column.endswith('"') -%}
        {%- do columns.append(adapter.quote(column[1:-1])) -%}
    {%- else -%}
        {%- do columns.append(column) -%}
    {%- endif -%}
{%- endfor -%}
{%- set keys = [] -%}
{%- for column in columns -%}
    {%- do keys.append(flagsmith_warehouse.partition_key(column)) -%}
{%- endfor %}

with

scoped as (
    select * from {{ model }}
    {% if flagsmith_warehouse.test_recent_rows_only(recent_rows_column) %}
    where ({{ keys | join(', ') }}) in (
        select {{ keys | join(', ') }}
        from {{ model }}
        where {{ flagsmith_warehouse.latest_batch_condition(model, recent_rows_column) }}
    )
    {% endif %}
),

keys_counted as (
    select
        {% for column in columns -%}
        {{ column }},
        {% endfor -%}
        count(*) as row_count
    from scoped
    group by
        {% for column in columns -%}
        {{ column }}{{ "," if not loop.last }}
        {% endfor %}
),

duplicates_found as (
    select * from keys_counted
    where row_count > 1
)

select * from duplicates_found

{% endtest %}
