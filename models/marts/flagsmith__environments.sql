{{ config(**flagsmith_warehouse.incremental_config(
    'stg_flagsmith__identity_webhooks', ['environment_id'],
    rebuild_after_erasure=true
)) }}

{#- One row per Flagsmith environment id, over the deliveries whose flags carry it. Counts come
    from the per-identity and per-feature marts (one row per identity, feature) rather than from
    the deliveries; the URL labels combine the row's own with those of the new deliveries.
    Incremental per environment: environments with new deliveries are recomputed. -#}

with

new_deliveries as (
    select
        environment_id,
        environment_key
    from {{ ref('stg_flagsmith__identity_webhooks') }}
    where {{ flagsmith_warehouse.new_input_condition() }} and environment_id is not null
),

environments_with_new_deliveries as (
    {{ flagsmith_warehouse.new_input_keys_sql(
        ref('stg_flagsmith__identity_webhooks'), ['environment_id'], 'environment_id is not null'
    ) }}
),

identities_counted as (
    select
        environment_id,
        min(first_seen_at) as first_seen_at,
        max(last_seen_at) as last_seen_at,
        count(*) as identities,
        sum(delivery_count) as deliveries,
        max(transform_batch_at) as transform_batch_at
    from {{ ref('int_flagsmith__identities') }}
    where
        environment_id in (
            select environments_with_new_deliveries.environment_id
            from environments_with_new_deliveries
        )
    group by environment_id
),

features_counted as (
    select
        environment_id,
        count(*) as features
    from {{ ref('flagsmith__features') }}
    where
        environment_id in (
            select environments_with_new_deliveries.environment_id
            from environments_with_new_deliveries
        )
    group by environment_id
),

environment_keys as (
    select distinct
        environment_id,
        environment_key
    from (
        select
            environment_id,
            environment_key
        from new_deliveries
        where environment_key is not null
        {% if flagsmith_warehouse.is_incremental_run() %}
        union all
        select
            environment_id,
            {{ flagsmith_warehouse.split_text('environment_keys', ',') }} as environment_key
        from {{ this }}
        where
            environment_id in (
                select environments_with_new_deliveries.environment_id
                from environments_with_new_deliveries
            )
        {% endif %}
    ) as listed
),

environment_keys_joined as (
    select
        environment_id,
        {{ flagsmith_warehouse.ordered_string_agg(
            'environment_key', ',', flagsmith_warehouse.in_byte_order('environment_key')
        ) }} as environment_keys
    from environment_keys
    group by environment_id
),

environments_combined as (
    select
        identities_counted.environment_id,
        environment_keys_joined.environment_keys,
        identities_counted.first_seen_at,
        identities_counted.last_seen_at,
        cast(identities_counted.identities as bigint) as identities,
        cast(coalesce(features_counted.features, 0) as bigint) as features,
        cast(identities_counted.deliveries as bigint) as deliveries,
        identities_counted.transform_batch_at
    from identities_counted
    left join features_counted
        on identities_counted.environment_id = features_counted.environment_id
    left join environment_keys_joined
        on identities_counted.environment_id = environment_keys_joined.environment_id
)

select * from environments_combined
