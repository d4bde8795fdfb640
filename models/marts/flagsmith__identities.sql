{{ config(materialized='view') }}

{#- One row per identity in its environment (environment_id, identity): first and last delivery,
    how many, and the chosen trait columns (var flagsmith__trait_columns) with their current
    value: the stored value in the identity's latest delivery, null when that delivery does not
    carry the trait. A view over int_flagsmith__identities, so a changed list of trait columns
    applies to every row at once. -#}

{%- set trait_columns = flagsmith_warehouse.trait_columns([
    'environment_id', 'identity', 'first_seen_at', 'last_seen_at', 'delivery_count',
    'transform_batch_at'
]) %}

with

identities as (
    select * from {{ ref('int_flagsmith__identities') }}
),

{% if trait_columns %}
current_traits as (
    select
        environment_id,
        identity,
        {% for column in trait_columns -%}
        max(case when trait_key = {{ flagsmith_warehouse.sql_text_literal(column.key) }}
            then trait_value end) as {{ column.name }}{{ ',' if not loop.last }}
        {% endfor %}
    from {{ ref('flagsmith__trait_history') }}
    where
        is_current
        and trait_key in (
            {%- for column in trait_columns -%}
            {{ flagsmith_warehouse.sql_text_literal(column.key) }}{{ ', ' if not loop.last }}
            {%- endfor -%}
        )
    group by environment_id, identity
),
{% endif %}

identities_with_traits as (
    select
        identities.environment_id,
        identities.identity,
        identities.first_seen_at,
        identities.last_seen_at,
        identities.delivery_count,
        {% for column in trait_columns -%}
        current_traits.{{ column.name }},
        {% endfor -%}
        identities.transform_batch_at
    from identities
    {% if trait_columns %}
    left join current_traits
        on
            {{ flagsmith_warehouse.environment_scope('identities.environment_id') }}
                = {{ flagsmith_warehouse.environment_scope('current_traits.environment_id') }}
            and identities.identity = current_traits.identity
    {% endif %}
)

select * from identities_with_traits
