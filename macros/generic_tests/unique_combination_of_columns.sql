{#-
    Fails with one row per duplicated combination. Nulls compare as equal (group by puts them in
    one group), so a key with a nullable part, such as environment_id in flagsmith__identities,
    is tested null-safely.
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

with

keys_counted as (
    select
        {% for column in combination_of_columns -%}
        {{ column }},
        {% endfor -%}
        count(*) as row_count
    from {{ model }}
    group by
        {% for column in combination_of_columns -%}
        {{ column }}{{ "," if not loop.last }}
        {% endfor %}
),

duplicates_found as (
    select * from keys_counted
    where row_count > 1
)

select * from duplicates_found

{% endtest %}
