with

webhooks as (
    select * from {{ ref('stg_flagsmith__identity_webhooks') }}
),

segments_unnested as (
    {{ flagsmith_warehouse.unnest_list('webhooks', 'segments', 'segment') }}
),

renamed as (
    select
        delivery_id,
        {{ flagsmith_warehouse.extract_field('segment', ['id'], 'bigint') }} as segment_id,
        received_at,
        environment_id,
        environment_key,
        identity,
        transform_batch_at,
        {{ flagsmith_warehouse.extract_field('segment', ['name'], 'text') }} as segment_name,
        -- older Flagsmith versions listed only the segments an identity is in, without `member`
        coalesce(
            {{ flagsmith_warehouse.extract_field('segment', ['member'], 'boolean') }}, true
        ) as is_member
    from segments_unnested
)

select * from renamed
