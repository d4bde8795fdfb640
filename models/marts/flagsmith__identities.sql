{#- Deliveries without flags have no environment_id; they are counted in the identity's row
    whose environment_id is null. -#}

with

webhooks as (
    select * from {{ ref('stg_flagsmith__identity_webhooks') }}
),

deliveries_aggregated as (
    select
        environment_id,
        identity,
        min(received_at) as first_seen_at,
        max(received_at) as last_seen_at,
        count(*) as delivery_count
    from webhooks
    group by
        environment_id,
        identity
)

select * from deliveries_aggregated
