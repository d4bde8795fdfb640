{{ config(**flagsmith_warehouse.incremental_config(
    'flagsmith__flag_evaluations', ['environment_id', 'feature_id', 'arm'],
    rebuild_after_erasure=true
)) }}

{#- The split Flagsmith reports, per (environment_id, feature_id, arm): the latest non-null
    percentage_allocation (by received_at, delivery_id) among evaluations served enabled by the
    environment's split (assignment_source 'default'); the arm is the variant. Flagsmith sends an
    allocation only for a multivariate option's value, so the control arm has none. Incremental
    like flagsmith__features: a row combines what it holds with the new evaluations, the latest
    wins. -#}

with

new_allocations as (
    select
        environment_id,
        feature_id,
        variant as arm,
        percentage_allocation,
        received_at,
        delivery_id,
        transform_batch_at
    from {{ ref('flagsmith__flag_evaluations') }}
    where
        {{ flagsmith_warehouse.new_input_condition() }}
        and enabled
        and assignment_source = 'default'
        and percentage_allocation is not null
),

candidates as (
    select
        environment_id,
        feature_id,
        arm,
        {{ flagsmith_warehouse.value_at_latest(
            'percentage_allocation', ['received_at', 'delivery_id']
        ) }} as percentage_allocation,
        max(received_at) as reported_at,
        {{ flagsmith_warehouse.value_at_latest('delivery_id', ['received_at', 'delivery_id']) }}
            as reported_delivery_id,
        max(transform_batch_at) as transform_batch_at
    from new_allocations
    group by environment_id, feature_id, arm
    {% if flagsmith_warehouse.is_incremental_run() %}
    union all
    select
        environment_id,
        feature_id,
        arm,
        percentage_allocation,
        reported_at,
        reported_delivery_id,
        transform_batch_at
    from {{ this }}
    where (environment_id, feature_id, arm) in (
        select environment_id, feature_id, arm from new_allocations
    )
    {% endif %}
),

candidates_ranked as (
    select
        *,
        max(transform_batch_at) over (partition by environment_id, feature_id, arm)
            as newest_batch,
        row_number() over (
            partition by environment_id, feature_id, arm
            order by reported_at desc, reported_delivery_id desc
        ) as recency
    from candidates
),

latest_allocations as (
    select
        environment_id,
        feature_id,
        arm,
        percentage_allocation,
        reported_at,
        reported_delivery_id,
        newest_batch as transform_batch_at
    from candidates_ranked
    where recency = 1
)

select * from latest_allocations
