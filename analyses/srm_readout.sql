{#- The sample-ratio check, arm by arm: for each experiment, the identities whose first arm it is,
    the share Flagsmith reports (the control, which reports none, gets what the others leave),
    the count that share expects, and each arm's part of the chi-square; with the experiment's
    p-value from flagsmith__experiments. Where srm_p_value is null the check cannot judge the
    split (see docs/experiments.md); below 0.001 the split is implausible. The per-arm figures are
    those flagsmith__experiments sums (int_flagsmith__experiment_arms). -#}

with

experiments as (
    select * from {{ ref('flagsmith__experiments') }}
),

arms as (
    select * from {{ ref('int_flagsmith__experiment_arms') }}
),

arms_read as (
    select
        experiments.environment_id,
        experiments.feature_id,
        experiments.feature_name,
        arms.arm,
        arms.observed,
        arms.share,
        arms.expected,
        case
            when experiments.srm_chi_square is not null
                then power(arms.observed - arms.expected, 2) / arms.expected
        end as chi_square_part,
        experiments.srm_chi_square,
        experiments.srm_p_value
    from experiments
    inner join arms
        on
            experiments.environment_id = arms.environment_id
            and experiments.feature_id = arms.feature_id
)

select * from arms_read
order by environment_id, feature_id, arm
