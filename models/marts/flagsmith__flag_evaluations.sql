{{ config(**flagsmith_warehouse.incremental_config(
    'stg_flagsmith__identity_webhooks', ['delivery_id']
)) }}

{#- One row per flag per delivery. Each delivery belongs to one batch, so new batches only add
    rows; replacing by delivery_id keeps a re-read batch (after a staging full refresh) exact. -#}

with

flag_evaluations as (
    select * from {{ ref('stg_flagsmith__flag_evaluations') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
),

contract_columns as (
    select
        delivery_id,
        feature_id,
        received_at,
        environment_id,
        environment_key,
        identity,
        feature_name,
        feature_type,
        feature_state_id,
        enabled,
        value,
        value_type,
        variant,
        assignment_source,
        feature_segment_id,
        percentage_allocation,
        feature_default_enabled,
        feature_initial_value,
        feature_description,
        feature_created_date,
        transform_batch_at
    from flag_evaluations
)

select * from contract_columns
