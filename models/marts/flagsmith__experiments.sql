{{ config(materialized='view') }}

{#- One row per experiment (environment_id, feature_id) with at least one experiment period: its
    exposure counts and a sample-ratio-mismatch (SRM) check of the identities' first arms against
    the split Flagsmith reports.

    The arms are the distinct arms of the experiment's periods; observed(arm) counts identities
    whose first arm it is. An arm's share is its latest reported percentage_allocation; when
    exactly one arm has none (Flagsmith's control) it gets 100 less the others' sum, and when
    every arm has one they must sum to 100 (within 0.001). expected(arm) = n x share / 100, with n
    the identities exposed; chi-square = sum of (observed - expected)^2 / expected, with arms - 1
    degrees of freedom. The three SRM columns are null when the shares cannot be told, a share is
    not positive, n < 100, an expected count is below 5, or there is one arm. docs/experiments.md
    lists the known limits (falsy variant values carry no allocation; a ramped split shows as a
    mismatch, since counts are lifetime and shares the latest). -#}

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

experiments_summarized as (
    select
        environment_id,
        feature_id,
        max(feature_name) as feature_name,  -- one name per experiment (its latest)
        min(first_exposed_at) as first_exposed_at,
        max(last_exposed_at) as last_exposed_at,
        count(*) as identities_exposed,
        cast(sum(case when is_multi_arm then 1 else 0 end) as bigint) as multi_arm_identities,
        max(transform_batch_at) as transform_batch_at
    from exposures
    group by environment_id, feature_id
),

arms_observed as (
    select
        arms.environment_id,
        arms.feature_id,
        arms.arm,
        count(exposures.identity) as observed
    from (
        select distinct arm_exposures.environment_id, arm_exposures.feature_id, arm_exposures.arm
        from arm_exposures
        inner join experiments_summarized
            on
                arm_exposures.environment_id = experiments_summarized.environment_id
                and arm_exposures.feature_id = experiments_summarized.feature_id
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

arms_expected as (
    select
        arms_reported.*,
        case
            when arm_count - arms_reported = 1 then 1
            when arm_count = arms_reported and abs(reported_total - 100) <= 0.001 then 1
            else 0
        end as is_split_known,
        coalesce(reported_share, 100 - coalesce(reported_total, 0)) as share
    from arms_reported
),

srm_summed as (
    select
        arms_expected.environment_id,
        arms_expected.feature_id,
        max(arms_expected.arm_count) as arm_count,
        min(arms_expected.is_split_known) as is_split_known,
        min(arms_expected.share) as smallest_share,
        min(experiments_summarized.identities_exposed * arms_expected.share / 100.0)
            as smallest_expected,
        sum(
            power(
                arms_expected.observed
                - experiments_summarized.identities_exposed * arms_expected.share / 100.0,
                2
            )
            / nullif(experiments_summarized.identities_exposed * arms_expected.share / 100.0, 0)
        ) as chi_square
    from arms_expected
    inner join experiments_summarized
        on
            arms_expected.environment_id = experiments_summarized.environment_id
            and arms_expected.feature_id = experiments_summarized.feature_id
    group by arms_expected.environment_id, arms_expected.feature_id
),

srm_checked as (
    select
        experiments_summarized.environment_id,
        experiments_summarized.feature_id,
        experiments_summarized.identities_exposed,
        srm_summed.arm_count,
        case
            when
                srm_summed.is_split_known = 1
                and srm_summed.arm_count > 1
                and srm_summed.smallest_share > 0
                and experiments_summarized.identities_exposed >= 100
                and srm_summed.smallest_expected >= 5
                then srm_summed.chi_square
        end as srm_chi_square
    from experiments_summarized
    inner join srm_summed
        on
            experiments_summarized.environment_id = srm_summed.environment_id
            and experiments_summarized.feature_id = srm_summed.feature_id
),

experiments_checked as (
    select
        experiments_summarized.environment_id,
        experiments_summarized.feature_id,
        experiments_summarized.feature_name,
        experiments_summarized.first_exposed_at,
        experiments_summarized.last_exposed_at,
        experiments_summarized.identities_exposed,
        experiments_summarized.multi_arm_identities,
        srm_checked.arm_count,
        srm_checked.srm_chi_square,
        case when srm_checked.srm_chi_square is not null then srm_checked.arm_count - 1 end
            as srm_degrees_of_freedom,
        {{ flagsmith_warehouse.chi_square_upper_tail(
            'srm_checked.srm_chi_square', 'srm_checked.arm_count - 1'
        ) }} as srm_p_value,
        experiments_summarized.transform_batch_at
    from experiments_summarized
    inner join srm_checked
        on
            experiments_summarized.environment_id = srm_checked.environment_id
            and experiments_summarized.feature_id = srm_checked.feature_id
)

select * from experiments_checked
