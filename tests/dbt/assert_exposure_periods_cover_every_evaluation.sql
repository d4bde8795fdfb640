-- Every evaluation belongs to exactly one exposure period, and each identity-feature pair has
-- exactly one current period: per pair, the periods' evaluation counts add up to the
-- evaluations. Checks the identities of the latest batch (all of them with
-- `--vars '{flagsmith__test_all_history: true}'` or on a full refresh).

{%- set scoped = flagsmith_warehouse.test_recent_rows_only('transform_batch_at') %}

with

flag_exposure_periods as (
    select * from {{ ref('flagsmith__flag_exposure_periods') }}
),

identities_checked as (
    select distinct environment_id, identity
    from flag_exposure_periods
    {% if scoped %}
    where {{ flagsmith_warehouse.latest_batch_condition(
        ref('flagsmith__flag_exposure_periods'), 'transform_batch_at'
    ) }}
    {% endif %}
),

flag_evaluations as (
    select * from {{ ref('flagsmith__flag_evaluations') }}
    where (environment_id, identity) in (select environment_id, identity from identities_checked)
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
    where (environment_id, identity) in (select environment_id, identity from identities_checked)
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
