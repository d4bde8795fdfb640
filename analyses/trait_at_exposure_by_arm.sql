{#- Identities per arm by a trait's value at the moment they entered the experiment (the value
    stored as of first_exposed_at, the delivery at that instant included; `(absent)` when the
    identity had no such trait then). Checks that the arms are balanced on a trait, or splits a
    readout by it. The trait: var flagsmith__analysis_trait_key (default 'plan'). Only
    first arms, multi-arm identities left out. -#}

{%- set trait = {'key': var('flagsmith__analysis_trait_key', 'plan'), 'name': 'trait_value'} %}

with

exposures as (
    select * from {{ ref('int_flagsmith__experiment_exposures') }}
    where not is_multi_arm
),

traits_at_exposure as (
    {{ flagsmith_warehouse.trait_values_as_of('exposures', 'first_exposed_at', [trait]) }}
),

exposures_described as (
    select
        exposures.environment_id,
        exposures.feature_id,
        exposures.feature_name,
        exposures.first_arm as arm,
        coalesce(traits_at_exposure.trait_value, '(absent)') as trait_value
    from exposures
    left join traits_at_exposure
        on
            exposures.environment_id = traits_at_exposure.environment_id
            and exposures.identity = traits_at_exposure.identity
            and exposures.feature_id = traits_at_exposure.feature_id
),

breakdown as (
    select
        environment_id,
        feature_id,
        feature_name,
        arm,
        trait_value,
        count(*) as identities
    from exposures_described
    group by environment_id, feature_id, feature_name, arm, trait_value
)

select * from breakdown
order by environment_id, feature_id, arm, trait_value
