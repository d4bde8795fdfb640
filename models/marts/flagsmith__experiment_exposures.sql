{{ config(materialized='view') }}

{#- One row per identity and experiment (environment_id, identity, feature_id), for identities
    with at least one experiment period: what Statsig and Eppo take as an exposure table. A view,
    so the identity map and the trait columns (dbt vars) apply to every row as soon as they
    change: `user_id` is the identity's mapped key where the map has one, else the identity, and
    each trait column holds the trait's value as of first_exposed_at (the delivery at that instant
    included). -#}

{%- set trait_columns = flagsmith_warehouse.trait_columns([
    'environment_id', 'identity', 'feature_id', 'feature_name', 'user_id', 'first_exposed_at',
    'first_arm', 'environment_key', 'last_exposed_at', 'exposure_count', 'arm_count',
    'is_multi_arm', 'transform_batch_at'
]) %}

with

exposures as (
    select * from {{ ref('int_flagsmith__experiment_exposures') }}
),

mapped_identities as (
    {{ flagsmith_warehouse.mapped_identities_sql() }}
),

{% if trait_columns %}
traits_at_exposure as (
    {{ flagsmith_warehouse.trait_values_as_of('exposures', 'first_exposed_at', trait_columns) }}
),
{% endif %}

exposures_with_users as (
    select
        exposures.environment_id,
        exposures.identity,
        exposures.feature_id,
        exposures.feature_name,
        coalesce(mapped_identities.user_id, exposures.identity) as user_id,
        exposures.first_exposed_at,
        exposures.first_arm,
        exposures.environment_key,
        exposures.last_exposed_at,
        exposures.exposure_count,
        exposures.arm_count,
        exposures.is_multi_arm,
        {% for column in trait_columns -%}
        traits_at_exposure.{{ column.name }},
        {% endfor -%}
        exposures.transform_batch_at
    from exposures
    left join mapped_identities
        on exposures.identity = mapped_identities.identity
    {% if trait_columns %}
    left join traits_at_exposure
        on
            exposures.environment_id = traits_at_exposure.environment_id
            and exposures.identity = traits_at_exposure.identity
            and exposures.feature_id = traits_at_exposure.feature_id
    {% endif %}
)

select * from exposures_with_users
