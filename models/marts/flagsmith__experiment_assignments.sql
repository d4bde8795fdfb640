{{ config(materialized='view') }}

{#- A GrowthBook assignment query as it stands (user_id, timestamp, experiment_id, variation_id),
    one row per exposure period: each time an identity starts being served a state of a
    feature. Eppo and Statsig take the same rows by column mapping (see the README). -#}

with

exposure_periods as (
    select * from {{ ref('flagsmith__flag_exposure_periods') }}
),

assignments_renamed as (
    select
        identity as user_id,
        valid_from as {{ adapter.quote('timestamp') }},
        feature_name as experiment_id,
        variant as variation_id,
        environment_id,
        environment_key,
        assignment_source,
        feature_id,
        transform_batch_at
    from exposure_periods
)

select * from assignments_renamed
