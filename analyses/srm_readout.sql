{#- The sample-ratio check, arm by arm: for each experiment, the identities whose first arm it is,
    the share Flagsmith reports (the control, which reports none, gets what the others leave),
    the count that share expects, and each arm's part of the chi-square; with the experiment's
    p-value from flagsmith__experiments. Where srm_p_value is null the check cannot judge the
    split (see docs/experiments.md); below 0.001 the split is implausible. -#}

with

experiments as (
    select * from {{ ref('flagsmith__experiments') }}
),

exposures as (
    select * from {{ ref('int_flagsmith__experiment_exposures') }}
),

arms as (
    select distinct environment_id, feature_id, arm
    from {{ ref('int_flagsmith__experiment_arm_exposures') }}
),

allocations as (
    select * from {{ ref('int_flagsmith__experiment_allocations') }}
),

arms_observed as (
    select
        arms.environment_id,
        arms.feature_id,
        arms.arm,
        count(exposures.identity) as observed,
        max(allocations.percentage_allocation) as reported_share
    from arms
    left join exposures
        on
            arms.environment_id = exposures.environment_id
            and arms.feature_id = exposures.feature_id
            and arms.arm = exposures.first_arm
    left join allocations
        on
            arms.environment_id = allocations.environment_id
            and arms.feature_id = allocations.feature_id
            and arms.arm = allocations.arm
    group by arms.environment_id, arms.feature_id, arms.arm
),

shares_completed as (
    select
        arms_observed.*,
        coalesce(
            reported_share,
            100 - sum(reported_share) over (partition by environment_id, feature_id)
        ) as share
    from arms_observed
),

arms_read as (
    select
        experiments.environment_id,
        experiments.feature_id,
        experiments.feature_name,
        shares_completed.arm,
        shares_completed.observed,
        shares_completed.share,
        experiments.identities_exposed * shares_completed.share / 100.0 as expected,
        case when experiments.srm_chi_square is not null then
            power(
                shares_completed.observed
                - experiments.identities_exposed * shares_completed.share / 100.0, 2
            ) / (experiments.identities_exposed * shares_completed.share / 100.0)
        end as chi_square_part,
        experiments.srm_chi_square,
        experiments.srm_p_value
    from experiments
    inner join shares_completed
        on
            experiments.environment_id = shares_completed.environment_id
            and experiments.feature_id = shares_completed.feature_id
)

select * from arms_read
order by environment_id, feature_id, arm
