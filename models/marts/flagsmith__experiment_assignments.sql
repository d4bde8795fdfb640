{{ config(materialized='view') }}

{#- Who was in which arm of which experiment, from when: one row per experiment period
    (environment_id, identity, feature_id, timestamp). A GrowthBook assignment query as it stands
    (user_id, timestamp, experiment_id, variation_id), and an Eppo or Statsig assignment source
    by column mapping. An experiment period is an exposure period of a MULTIVARIATE feature (by
    its latest delivery) served enabled by Flagsmith's own split; a disabled flag or an override
    is not an assignment. experiment_id is the feature's latest name, so a rename does not split
    a test; feature names repeat across environments, so filter on environment_id. A view: the
    identity map applies as soon as it changes. -#}

with

exposure_periods as (
    select * from {{ ref('flagsmith__flag_exposure_periods') }}
),

experiment_features as (
    {{ flagsmith_warehouse.experiment_features_sql() }}
),

mapped_identities as (
    {{ flagsmith_warehouse.mapped_identities_sql() }}
),

assignments_renamed as (
    select
        exposure_periods.environment_id,
        exposure_periods.identity,
        exposure_periods.feature_id,
        exposure_periods.valid_from as {{ adapter.quote('timestamp') }},
        coalesce(mapped_identities.user_id, exposure_periods.identity) as user_id,
        experiment_features.feature_name as experiment_id,
        exposure_periods.variant as variation_id,
        experiment_features.feature_name as experiment_name,
        exposure_periods.variant as variation_name,
        exposure_periods.environment_key,
        exposure_periods.assignment_source,
        exposure_periods.transform_batch_at
    from exposure_periods
    inner join experiment_features
        on
            exposure_periods.environment_id = experiment_features.environment_id
            and exposure_periods.feature_id = experiment_features.feature_id
    left join mapped_identities
        on exposure_periods.identity = mapped_identities.identity
    where
        exposure_periods.enabled
        and exposure_periods.assignment_source = 'default'
)

select * from assignments_renamed
