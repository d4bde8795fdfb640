with

webhooks as (
    select * from {{ ref('stg_flagsmith__identity_webhooks') }}
),

flags_unnested as (
    {{ flagsmith_warehouse.unnest_list('webhooks', 'flags', 'flag') }}
),

renamed as (
    select
        delivery_id,
        {{ flagsmith_warehouse.extract_field('flag', ['feature', 'id'], 'bigint') }} as feature_id,
        received_at,
        {{ flagsmith_warehouse.extract_field('flag', ['environment'], 'bigint') }}
            as environment_id,
        environment_key,
        identity,
        transform_batch_at,
        {{ flagsmith_warehouse.extract_field('flag', ['feature', 'name'], 'text') }}
            as feature_name,
        {{ flagsmith_warehouse.extract_field('flag', ['feature', 'type'], 'text') }}
            as feature_type,
        {{ flagsmith_warehouse.extract_field('flag', ['id'], 'bigint') }} as feature_state_id,
        {{ flagsmith_warehouse.extract_field('flag', ['enabled'], 'boolean') }} as enabled,
        {{ flagsmith_warehouse.json_scalar_text(
            flagsmith_warehouse.extract_field('flag', ['feature_state_value'])
        ) }} as value,
        {{ flagsmith_warehouse.json_scalar_type(
            flagsmith_warehouse.extract_field('flag', ['feature_state_value'])
        ) }} as value_type,
        {{ flagsmith_warehouse.extract_field('flag', ['feature_segment'], 'bigint') }}
            as feature_segment_id,
        {{ flagsmith_warehouse.extract_field('flag', ['identity'], 'bigint') }}
            as identity_override_id,
        {{ flagsmith_warehouse.extract_field(
            'flag', ['percentage_allocation'], 'double precision'
        ) }} as percentage_allocation,
        {{ flagsmith_warehouse.extract_field('flag', ['feature', 'default_enabled'], 'boolean') }}
            as feature_default_enabled,
        {{ flagsmith_warehouse.extract_field('flag', ['feature', 'initial_value'], 'text') }}
            as feature_initial_value,
        {{ flagsmith_warehouse.extract_field('flag', ['feature', 'description'], 'text') }}
            as feature_description,
        {{ flagsmith_warehouse.extract_field(
            'flag', ['feature', 'created_date'], 'timestamp with time zone'
        ) }} as feature_created_date
    from flags_unnested
),

variants_derived as (
    select
        delivery_id,
        feature_id,
        received_at,
        environment_id,
        environment_key,
        identity,
        transform_batch_at,
        feature_name,
        feature_type,
        feature_state_id,
        enabled,
        value,
        value_type,
        case
            when not enabled then 'off'
            when value is null then 'on'
            else value
        end as variant,
        case
            when identity_override_id is not null then 'identity_override'
            when feature_segment_id is not null then 'segment_override'
            else 'default'
        end as assignment_source,
        feature_segment_id,
        identity_override_id,
        percentage_allocation,
        feature_default_enabled,
        feature_initial_value,
        feature_description,
        feature_created_date
    from renamed
)

select * from variants_derived
