{{ config(**flagsmith_warehouse.incremental_config(
    'flagsmith__flag_evaluations', ['environment_id', 'identity']
)) }}

{#- Gaps and islands over the evaluations of one feature for one identity, ordered by
    (received_at, delivery_id). A delivery that does not carry the feature has no row here, so it
    neither continues nor ends a run. Incremental per identity: every identity with new
    evaluations has all its periods recomputed from all its evaluations, so a late delivery that
    falls inside an old period splits or extends it exactly as a full refresh would. -#}

with

all_evaluations as (
    select * from {{ ref('flagsmith__flag_evaluations') }}
),

identities_with_new_evaluations as (
    select distinct
        environment_id,
        identity
    from all_evaluations
    where {{ flagsmith_warehouse.new_input_condition() }}
),

flag_evaluations as (
    select * from all_evaluations
    {% if is_incremental() %}
    where (environment_id, identity) in (
        select environment_id, identity from identities_with_new_evaluations
    )
    {% endif %}
),

identity_batches as (
    select
        environment_id,
        identity,
        max(transform_batch_at) as transform_batch_at
    from flag_evaluations
    group by environment_id, identity
),

evaluations_compared as (
    select
        environment_id,
        identity,
        feature_id,
        delivery_id,
        received_at,
        environment_key,
        feature_name,
        enabled,
        value,
        value_type,
        variant,
        assignment_source,
        row_number() over evaluation_order = 1
        or enabled is distinct from lag(enabled) over evaluation_order
        or value is distinct from lag(value) over evaluation_order
        or value_type is distinct from lag(value_type) over evaluation_order
        or variant is distinct from lag(variant) over evaluation_order
        or assignment_source is distinct from lag(assignment_source) over evaluation_order
            as is_run_start
    from flag_evaluations
    window evaluation_order as (
        partition by environment_id, identity, feature_id
        order by received_at, delivery_id
    )
),

runs_numbered as (
    select
        *,
        sum(case when is_run_start then 1 else 0 end) over (
            partition by environment_id, identity, feature_id
            order by received_at, delivery_id
            rows between unbounded preceding and current row
        ) as run_number
    from evaluations_compared
),

runs_described as (
    select
        *,
        first_value(feature_name) over (
            partition by environment_id, identity, feature_id, run_number
            order by received_at desc, delivery_id desc
        ) as latest_feature_name,
        first_value(environment_key) over (
            partition by environment_id, identity, feature_id, run_number
            order by received_at, delivery_id
        ) as first_environment_key
    from runs_numbered
),

runs_aggregated as (
    -- the state columns are constant within a run; grouping by them keeps them (null-safely)
    select
        environment_id,
        identity,
        feature_id,
        run_number,
        latest_feature_name as feature_name,
        first_environment_key as environment_key,
        enabled,
        value,
        value_type,
        variant,
        assignment_source,
        min(received_at) as valid_from,
        max(received_at) as last_evaluated_at,
        count(*) as evaluation_count
    from runs_described
    group by
        environment_id,
        identity,
        feature_id,
        run_number,
        latest_feature_name,
        first_environment_key,
        enabled,
        value,
        value_type,
        variant,
        assignment_source
),

periods_closed as (
    select
        runs_aggregated.environment_id,
        runs_aggregated.identity,
        runs_aggregated.feature_id,
        runs_aggregated.valid_from,
        runs_aggregated.feature_name,
        runs_aggregated.enabled,
        runs_aggregated.value,
        runs_aggregated.value_type,
        runs_aggregated.variant,
        runs_aggregated.assignment_source,
        lead(runs_aggregated.valid_from) over (
            partition by
                runs_aggregated.environment_id,
                runs_aggregated.identity,
                runs_aggregated.feature_id
            order by runs_aggregated.run_number
        ) as valid_to,
        runs_aggregated.last_evaluated_at,
        runs_aggregated.evaluation_count,
        runs_aggregated.environment_key,
        identity_batches.transform_batch_at
    from runs_aggregated
    inner join identity_batches
        on
            runs_aggregated.environment_id = identity_batches.environment_id
            and runs_aggregated.identity = identity_batches.identity
),

currency_flagged as (
    select
        environment_id,
        identity,
        feature_id,
        valid_from,
        feature_name,
        enabled,
        value,
        value_type,
        variant,
        assignment_source,
        valid_to,
        last_evaluated_at,
        evaluation_count,
        valid_to is null as is_current,
        environment_key,
        transform_batch_at
    from periods_closed
)

select * from currency_flagged
