{{ config(materialized='ephemeral') }}

{#- One row per arm of each experiment (environment_id, feature_id, arm): the arms are the distinct
    arms of its experiment periods; `observed` counts identities whose first arm it is (their sum
    is the identities exposed, `exposed`). `reported_share` is the arm's latest reported
    percentage_allocation; `share` is that, or, for an arm without one, 100 less the others' sum.
    `is_split_known` (per experiment) says the shares can be told: exactly one arm lacks a
    reported share (Flagsmith's control), or all have one and they sum to 100 within 0.001.
    `expected` = exposed x share / 100. The sample-ratio check of flagsmith__experiments and the
    srm_readout analysis read these rows, so they agree. -#}

with

arm_exposures as (
    select * from {{ ref('int_flagsmith__experiment_arm_exposures') }}
),

exposures as (
    select * from {{ ref('int_flagsmith__experiment_exposures') }}
),

allocations as (
    select * from {{ ref('int_flagsmith__experiment_allocations') }}
),

experiment_features as (
    {{ flagsmith_warehouse.experiment_features_sql() }}
),

arms_observed as (
    select
        arms.environment_id,
        arms.feature_id,
        arms.arm,
        count(exposures.identity) as observed
    from (
        select distinct
            arm_exposures.environment_id,
            arm_exposures.feature_id,
            arm_exposures.arm
        from arm_exposures
        inner join experiment_features
            on
                arm_exposures.environment_id = experiment_features.environment_id
                and arm_exposures.feature_id = experiment_features.feature_id
    ) as arms
    left join exposures
        on
            arms.environment_id = exposures.environment_id
            and arms.feature_id = exposures.feature_id
            and arms.arm = exposures.first_arm
    group by arms.environment_id, arms.feature_id, arms.arm
),

arms_reported as (
    select
        arms_observed.*,
        allocations.percentage_allocation as reported_share,
        sum(arms_observed.observed) over experiment as exposed,
        count(*) over experiment as arm_count,
        count(allocations.percentage_allocation) over experiment as arms_reported,
        sum(allocations.percentage_allocation) over experiment as reported_total
    from arms_observed
    left join allocations
        on
            arms_observed.environment_id = allocations.environment_id
            and arms_observed.feature_id = allocations.feature_id
            and arms_observed.arm = allocations.arm
    window experiment as (partition by arms_observed.environment_id, arms_observed.feature_id)
),

arms_shared as (
    select
        environment_id,
        feature_id,
        arm,
        observed,
        exposed,
        arm_count,
        reported_share,
        case
            when arm_count - arms_reported = 1 then 1
            when arm_count = arms_reported and abs(reported_total - 100) <= 0.001 then 1
            else 0
        end as is_split_known,
        coalesce(reported_share, 100 - coalesce(reported_total, 0)) as share
    from arms_reported
),

arms_expected as (
    select
        *,
        exposed * share / 100.0 as expected
    from arms_shared
)

select * from arms_expected
