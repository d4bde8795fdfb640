{{ config(**flagsmith_warehouse.incremental_config(
    'stg_flagsmith__identity_webhooks', ['environment_id', 'identity'],
    replace_new_identities=true
)) }}

{#- Runs of one stored value of one trait of one identity. Transient traits are per-request and
    not state: they are ignored. Every delivery of the identity counts: a stored trait absent from
    a delivery was deleted, which ends its run, as does another value or another type (the integer
    1 and the string "1" are different values). `valid_to` is the received_at of the delivery
    that ended the run. Deliveries with the same received_at are one instant, whose state is the
    last one's by delivery_id (see `new_identity_deliveries_sql`). Incremental per identity,
    recomputed from all its deliveries. -#}

with

identity_deliveries as (
    {{ flagsmith_warehouse.new_identity_deliveries_sql() }}
),

traits as (
    select * from {{ ref('stg_flagsmith__traits') }}
    where not is_transient
),

traits_numbered as (
    select
        identity_deliveries.environment_id,
        identity_deliveries.identity,
        traits.trait_key,
        traits.trait_value,
        traits.trait_value_type,
        traits.trait_value_number,
        traits.trait_value_boolean,
        identity_deliveries.received_at,
        identity_deliveries.delivery_number
    from traits
    inner join identity_deliveries
        on traits.delivery_id = identity_deliveries.delivery_id
),

runs_started as (
    select
        *,
        (delivery_number - 1 is distinct from lag(delivery_number) over value_order)
        or (trait_value is distinct from lag(trait_value) over value_order)
        or (trait_value_type is distinct from lag(trait_value_type) over value_order)
            as is_run_start
    from traits_numbered
    window value_order as (
        partition by environment_id, identity, trait_key
        order by delivery_number
    )
),

runs_numbered as (
    select
        *,
        sum(case when is_run_start then 1 else 0 end) over (
            partition by environment_id, identity, trait_key
            order by delivery_number
            rows between unbounded preceding and current row
        ) as run_number
    from runs_started
),

runs_aggregated as (
    -- the value columns are constant within a run; grouping by them keeps them (null-safely)
    select
        environment_id,
        identity,
        trait_key,
        run_number,
        trait_value,
        trait_value_type,
        trait_value_number,
        trait_value_boolean,
        min(received_at) as valid_from,
        max(delivery_number) as last_delivery_number
    from runs_numbered
    group by
        environment_id,
        identity,
        trait_key,
        run_number,
        trait_value,
        trait_value_type,
        trait_value_number,
        trait_value_boolean
),

runs_closed as (
    select
        runs_aggregated.environment_id,
        runs_aggregated.identity,
        runs_aggregated.trait_key,
        runs_aggregated.valid_from,
        runs_aggregated.trait_value,
        runs_aggregated.trait_value_type,
        runs_aggregated.trait_value_number,
        runs_aggregated.trait_value_boolean,
        next_delivery.received_at as valid_to,
        next_delivery.delivery_id is null as is_current,
        last_delivery.transform_batch_at
    from runs_aggregated
    {{ flagsmith_warehouse.join_run_ends(
        'runs_aggregated', 'identity_deliveries', 'last_delivery', 'next_delivery'
    ) }}
)

select * from runs_closed
