{#- Gaps and islands over the evaluations of one feature for one identity. A delivery that does
    not carry the feature has no row here, so it neither continues nor ends a run. -#}

with

flag_evaluations as (
    select * from {{ ref('flagsmith__flag_evaluations') }}
),

evaluations_compared as (
    select
        environment_id,
        identity,
        feature_id,
        delivery_id,
        received_at,
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

runs_named as (
    select
        *,
        first_value(feature_name) over (
            partition by environment_id, identity, feature_id, run_number
            order by received_at desc, delivery_id desc
        ) as latest_feature_name
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
        enabled,
        value,
        value_type,
        variant,
        assignment_source,
        min(received_at) as valid_from,
        max(received_at) as last_evaluated_at,
        count(*) as evaluation_count
    from runs_named
    group by
        environment_id,
        identity,
        feature_id,
        run_number,
        latest_feature_name,
        enabled,
        value,
        value_type,
        variant,
        assignment_source
),

periods_closed as (
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
        lead(valid_from) over (
            partition by environment_id, identity, feature_id
            order by run_number
        ) as valid_to,
        last_evaluated_at,
        evaluation_count
    from runs_aggregated
),

currency_flagged as (
    select
        *,
        valid_to is null as is_current
    from periods_closed
)

select * from currency_flagged
