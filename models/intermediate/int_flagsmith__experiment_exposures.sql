{{ config(materialized='ephemeral') }}

{#- One row per identity and experiment it was exposed to (environment_id, identity,
    feature_id): its arm rows summed up. The first arm is the arm of the first experiment
    period; an identity whose periods span several arms is multi-arm. Features that are no
    longer experiments drop out here, before the next run rebuilds the arm rows. Ephemeral: the
    two marts that read it inline it, so a scheduled build runs one node fewer. -#}

with

arm_exposures as (
    select * from {{ ref('int_flagsmith__experiment_arm_exposures') }}
),

experiment_features as (
    {{ flagsmith_warehouse.experiment_features_sql() }}
),

exposures_summarized as (
    select
        arm_exposures.environment_id,
        arm_exposures.identity,
        arm_exposures.feature_id,
        min(arm_exposures.first_exposed_at) as first_exposed_at,
        {{ flagsmith_warehouse.value_at_earliest(
            'arm_exposures.arm', ['arm_exposures.first_exposed_at']
        ) }} as first_arm,
        {{ flagsmith_warehouse.value_at_earliest(
            'arm_exposures.first_environment_key', ['arm_exposures.first_exposed_at']
        ) }} as environment_key,
        max(arm_exposures.last_exposed_at) as last_exposed_at,
        cast(sum(arm_exposures.exposure_count) as bigint) as exposure_count,
        count(*) as arm_count,
        max(arm_exposures.transform_batch_at) as transform_batch_at
    from arm_exposures
    inner join experiment_features
        on
            arm_exposures.environment_id = experiment_features.environment_id
            and arm_exposures.feature_id = experiment_features.feature_id
    group by
        arm_exposures.environment_id,
        arm_exposures.identity,
        arm_exposures.feature_id
),

exposures_named as (
    select
        exposures_summarized.environment_id,
        exposures_summarized.identity,
        exposures_summarized.feature_id,
        experiment_features.feature_name,
        exposures_summarized.first_exposed_at,
        exposures_summarized.first_arm,
        exposures_summarized.environment_key,
        exposures_summarized.last_exposed_at,
        exposures_summarized.exposure_count,
        exposures_summarized.arm_count,
        exposures_summarized.arm_count > 1 as is_multi_arm,
        exposures_summarized.transform_batch_at
    from exposures_summarized
    inner join experiment_features
        on
            exposures_summarized.environment_id = experiment_features.environment_id
            and exposures_summarized.feature_id = experiment_features.feature_id
)

select * from exposures_named
