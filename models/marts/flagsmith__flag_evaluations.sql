with

flag_evaluations as (
    select * from {{ ref('stg_flagsmith__flag_evaluations') }}
),

columns_selected as (
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
        percentage_allocation
    from flag_evaluations
)

select * from columns_selected
