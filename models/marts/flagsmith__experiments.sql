{{ config(materialized='view') }}

{#- One row per experiment (environment_id, feature_id) with at least one experiment period: its
    exposure counts and a sample-ratio-mismatch (SRM) check of the identities' first arms against
    the split Flagsmith reports.

    Observed and expected counts per arm come from int_flagsmith__experiment_arms (which says how
    the shares are told); chi-square = sum of (observed - expected)^2 / expected, with arms - 1
    degrees of freedom. The three SRM columns are null when the shares cannot be told, a share is
    not positive, n < 100, an expected count is below 5, or there is one arm. docs/experiments.md
    lists the known limits (falsy variant values carry no allocation; a ramped split shows as a
    mismatch, since counts are lifetime and shares the latest). -#}

with

exposures as (
    select * from {{ ref('int_flagsmith__experiment_exposures') }}
),

arms as (
    select * from {{ ref('int_flagsmith__experiment_arms') }}
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

srm_summed as (
    select
        environment_id,
        feature_id,
        max(arm_count) as arm_count,
        min(is_split_known) as is_split_known,
        min(share) as smallest_share,
        min(expected) as smallest_expected,
        sum(power(observed - expected, 2) / nullif(expected, 0)) as chi_square
    from arms
    group by environment_id, feature_id
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
