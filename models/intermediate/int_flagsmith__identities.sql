{{ config(**flagsmith_warehouse.incremental_config(
    'stg_flagsmith__identity_webhooks', ['environment_id', 'identity']
)) }}

{#- One row per identity in its environment: first and last delivery and how many (the trait
    columns are added by the view flagsmith__identities). Deliveries without flags have no
    environment_id; they are counted in the identity's row whose environment_id is null.
    Incremental per identity: recounted from all its deliveries, so a batch read twice never
    counts twice. -#}

with

webhooks as (
    select * from {{ ref('stg_flagsmith__identity_webhooks') }}
),

{% if flagsmith_warehouse.is_incremental_run() %}
identities_with_new_deliveries as (
    {{ flagsmith_warehouse.identities_with_new_deliveries_sql() }}
),
{% endif %}

identity_deliveries as (
    select * from webhooks
    {% if flagsmith_warehouse.is_incremental_run() %}
    where ({{ flagsmith_warehouse.environment_scope('environment_id') }}, identity) in (
        select environment_scope, identity from identities_with_new_deliveries
    )
    {% endif %}
),

deliveries_aggregated as (
    select
        environment_id,
        identity,
        min(received_at) as first_seen_at,
        max(received_at) as last_seen_at,
        count(*) as delivery_count,
        max(transform_batch_at) as transform_batch_at
    from identity_deliveries
    group by
        environment_id,
        identity
)

select * from deliveries_aggregated
