{#- Data tests on the large incremental marts look at the latest batch only, unless asked for all
    history (see unique_combination_of_columns). -#}

{% macro test_recent_rows_only(recent_rows_column) -%}
    {{ return(
        recent_rows_column is not none
        and not var('flagsmith__test_all_history', false)
        and not flags.FULL_REFRESH
    ) }}
{%- endmacro %}


{% macro latest_batch_condition(model, recent_rows_column) -%}
    {{ recent_rows_column }} >= (select max({{ recent_rows_column }}) from {{ model }})
{%- endmacro %}


{% test accepted_values_in_recent_rows(
    model, column_name, values, recent_rows_column='transform_batch_at'
) %}

select
    {{ column_name }} as value_field,
    count(*) as n_records
from {{ model }}
where
    {{ column_name }} is not null
    and {{ column_name }} not in (
        {%- for value in values %}'{{ value }}'{{ ", " if not loop.last }}{% endfor -%}
    )
    {% if flagsmith_warehouse.test_recent_rows_only(recent_rows_column) %}
    and {{ flagsmith_warehouse.latest_batch_condition(model, recent_rows_column) }}
    {% endif %}
group by {{ column_name }}

{% endtest %}


{% test not_null_columns_in_recent_rows(model, columns, recent_rows_column='transform_batch_at') %}
{#- One query for all the columns of a model that must not be null: a scheduled build runs one
    test per model instead of one per column. Returns the offending rows with the names of their
    null columns. -#}

with

checked as (
    select
        {% for column in columns -%}
        case when {{ column }} is null then '{{ column }}' end
            as null_{{ loop.index }}{{ ',' if not loop.last }}
        {% endfor %}
    from {{ model }}
    where
        ({% for column in columns %}{{ column }} is null{{ ' or ' if not loop.last }}{% endfor %})
        {% if flagsmith_warehouse.test_recent_rows_only(recent_rows_column) %}
        and {{ flagsmith_warehouse.latest_batch_condition(model, recent_rows_column) }}
        {% endif %}
)

select * from checked

{% endtest %}
