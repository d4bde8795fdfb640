-- Every evaluation belongs to exactly one exposure period: per identity and feature, the
-- periods' evaluation counts add up to the evaluations. Returns the pairs where they do not.

with

flag_evaluations as (
    select * from {{ ref('flagsmith__flag_evaluations') }}
),

flag_exposure_periods as (
    select * from {{ ref('flagsmith__flag_exposure_periods') }}
),

evaluations_counted as (
    select
        environment_id,
        identity,
        feature_id,
        count(*) as evaluation_count
    from flag_evaluations
    group by
        environment_id,
        identity,
        feature_id
),

periods_counted as (
    select
        environment_id,
        identity,
        feature_id,
        sum(evaluation_count) as evaluation_count,
        sum(case when is_current then 1 else 0 end) as current_period_count
    from flag_exposure_periods
    group by
        environment_id,
        identity,
        feature_id
),

mismatches_found as (
    select
        evaluations_counted.environment_id,
        evaluations_counted.identity,
        evaluations_counted.feature_id,
        evaluations_counted.evaluation_count,
        periods_counted.evaluation_count as period_evaluation_count,
        periods_counted.current_period_count
    from evaluations_counted
    left join periods_counted
        on
            evaluations_counted.environment_id = periods_counted.environment_id
            and evaluations_counted.identity = periods_counted.identity
            and evaluations_counted.feature_id = periods_counted.feature_id
    where
        periods_counted.evaluation_count is distinct from evaluations_counted.evaluation_count
        or periods_counted.current_period_count != 1
)

select * from mismatches_found
