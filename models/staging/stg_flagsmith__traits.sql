with

webhooks as (
    select * from {{ ref('stg_flagsmith__identity_webhooks') }}
),

traits_unnested as (
    {{ flagsmith_warehouse.unnest_list('webhooks', 'traits', 'trait') }}
),

renamed as (
    select
        delivery_id,
        {{ flagsmith_warehouse.extract_field('trait', ['trait_key'], 'text') }} as trait_key,
        received_at,
        environment_id,
        environment_key,
        identity,
        transform_batch_at,
        {{ flagsmith_warehouse.extract_field('trait', ['id'], 'bigint') }} as trait_id,
        coalesce(
            {{ flagsmith_warehouse.extract_field('trait', ['transient'], 'boolean') }}, false
        ) as is_transient,
        {{ flagsmith_warehouse.json_scalar_text(
            flagsmith_warehouse.extract_field('trait', ['trait_value'])
        ) }} as trait_value,
        {{ flagsmith_warehouse.json_scalar_type(
            flagsmith_warehouse.extract_field('trait', ['trait_value'])
        ) }} as trait_value_type
    from traits_unnested
),

values_typed as (
    select
        delivery_id,
        trait_key,
        received_at,
        environment_id,
        environment_key,
        identity,
        transform_batch_at,
        trait_id,
        is_transient,
        trait_value,
        trait_value_type,
        case
            when trait_value_type in ('integer', 'float')
                then cast(trait_value as {{ flagsmith_warehouse.sql_type('double precision') }})
        end as trait_value_number,
        case
            when trait_value_type = 'boolean' then trait_value = 'true'
        end as trait_value_boolean
    from renamed
)

select * from values_typed
