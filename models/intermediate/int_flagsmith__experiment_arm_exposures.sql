{{ config(**flagsmith_warehouse.incremental_config(
    'flagsmith__flag_exposure_periods', ['environment_id', 'identity', 'feature_id'],
    replace_new_input_of='flagsmith__flag_exposure_periods',
    rebuild_state='experiment_features_state'
)) }}

{#- The experiment periods of each identity, summed up per arm: one row per (environment_id,
    identity, feature_id, arm). An experiment period is an exposure period of an experiment (a
    MULTIVARIATE feature, by its latest delivery) served enabled by Flagsmith's own split
    (assignment_source 'default'); its arm is the variant. Every experiment mart reads these
    rows, so the three never disagree.

    Incremental per (identity, feature) whose exposure periods changed: all its experiment
    periods are summed again, and a pair left with none (a late delivery at the same instant
    changed the only one) is emptied (`replace_new_input_of`). Which features are experiments
    is recorded beside the watermark: when it changes, the next run rebuilds this model whole,
    so a feature that becomes an experiment brings its whole history. -#}

with

exposure_periods as (
    select * from {{ ref('flagsmith__flag_exposure_periods') }}
),

experiment_features as (
    {{ flagsmith_warehouse.experiment_features_sql() }}
),

{% if flagsmith_warehouse.is_incremental_run() %}
pairs_with_new_periods as (
    {{ flagsmith_warehouse.new_input_keys_sql(
        ref('flagsmith__flag_exposure_periods'), ['environment_id', 'identity', 'feature_id']
    ) }}
),
{% endif %}

experiment_periods as (
    select exposure_periods.*
    from exposure_periods
    inner join experiment_features
        on
            exposure_periods.environment_id = experiment_features.environment_id
            and exposure_periods.feature_id = experiment_features.feature_id
    {% if flagsmith_warehouse.is_incremental_run() %}
    inner join pairs_with_new_periods as pairs
        on
            exposure_periods.environment_id = pairs.environment_id
            and exposure_periods.identity = pairs.identity
            and exposure_periods.feature_id = pairs.feature_id
    {% endif %}
    where
        exposure_periods.enabled
        and exposure_periods.assignment_source = 'default'
),

arms_summarized as (
    -- periods of one pair start at distinct times, so valid_from orders them
    select
        environment_id,
        identity,
        feature_id,
        variant as arm,
        min(valid_from) as first_exposed_at,
        {{ flagsmith_warehouse.value_at_earliest('environment_key', ['valid_from']) }}
            as first_environment_key,
        max(last_evaluated_at) as last_exposed_at,
        cast(sum(evaluation_count) as bigint) as exposure_count,
        count(*) as period_count,
        max(transform_batch_at) as transform_batch_at
    from experiment_periods
    group by
        environment_id,
        identity,
        feature_id,
        variant
)

select * from arms_summarized
