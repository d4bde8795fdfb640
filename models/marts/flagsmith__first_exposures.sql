{{ config(**flagsmith_warehouse.incremental_config(
    'flagsmith__flag_evaluations', ['environment_id', 'identity']
)) }}

{#- Any evaluation is an exposure, including one served 'off'. Incremental per identity, like the
    exposure periods: a late delivery can move an identity's first exposure earlier. -#}

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

evaluations_ordered as (
    select
        environment_id,
        identity,
        feature_id,
        received_at,
        enabled,
        value,
        variant,
        assignment_source,
        row_number() over (
            partition by environment_id, identity, feature_id
            order by received_at, delivery_id
        ) as evaluation_number,
        first_value(feature_name) over (
            partition by environment_id, identity, feature_id
            order by received_at desc, delivery_id desc
        ) as latest_feature_name,
        max(transform_batch_at) over (
            partition by environment_id, identity
        ) as transform_batch_at
    from flag_evaluations
),

exposures_summarized as (
    select
        environment_id,
        identity,
        feature_id,
        max(received_at) as last_evaluated_at,
        count(distinct variant) as variant_count
    from evaluations_ordered
    group by
        environment_id,
        identity,
        feature_id
),

first_evaluations_picked as (
    select * from evaluations_ordered
    where evaluation_number = 1
),

first_exposures_joined as (
    select
        first_evaluations_picked.environment_id,
        first_evaluations_picked.identity,
        first_evaluations_picked.feature_id,
        first_evaluations_picked.latest_feature_name as feature_name,
        first_evaluations_picked.received_at as first_exposed_at,
        first_evaluations_picked.variant as first_variant,
        first_evaluations_picked.enabled as first_enabled,
        first_evaluations_picked.value as first_value,
        first_evaluations_picked.assignment_source as first_assignment_source,
        exposures_summarized.last_evaluated_at,
        exposures_summarized.variant_count,
        exposures_summarized.variant_count > 1 as is_multi_variant,
        first_evaluations_picked.transform_batch_at
    from first_evaluations_picked
    inner join exposures_summarized
        on
            first_evaluations_picked.environment_id = exposures_summarized.environment_id
            and first_evaluations_picked.identity = exposures_summarized.identity
            and first_evaluations_picked.feature_id = exposures_summarized.feature_id
)

select * from first_exposures_joined
