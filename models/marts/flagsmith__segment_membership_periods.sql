{{ config(**flagsmith_warehouse.incremental_config(
    'stg_flagsmith__identity_webhooks', ['environment_id', 'identity'],
    replace_new_identities=true
)) }}

{#- Runs of deliveries of one identity in which it is listed as a member of the segment. Every
    delivery of the identity counts: one that lists the segment with `member` false, or does not
    list it at all, ends the run, and `valid_to` is that delivery's received_at. Deliveries with
    the same received_at are one instant, whose state is the last one's by delivery_id (see
    `new_identity_deliveries_sql`). Incremental per identity, recomputed from all its
    deliveries. -#}

with

identity_deliveries as (
    {{ flagsmith_warehouse.new_identity_deliveries_sql() }}
),

segment_memberships as (
    select * from {{ ref('stg_flagsmith__segment_memberships') }}
),

memberships_numbered as (
    select
        identity_deliveries.environment_id,
        identity_deliveries.identity,
        segment_memberships.segment_id,
        segment_memberships.segment_name,
        identity_deliveries.delivery_id,
        identity_deliveries.received_at,
        identity_deliveries.delivery_number,
        identity_deliveries.deliveries_at_instant
    from segment_memberships
    inner join identity_deliveries
        on segment_memberships.delivery_id = identity_deliveries.delivery_id
    where segment_memberships.is_member
),

runs_started as (
    select
        *,
        (
            delivery_number - 1 is distinct from lag(delivery_number) over (
                partition by environment_id, identity, segment_id
                order by delivery_number
            )
        ) as is_run_start
    from memberships_numbered
),

runs_numbered as (
    select
        *,
        sum(case when is_run_start then 1 else 0 end) over (
            partition by environment_id, identity, segment_id
            order by delivery_number
            rows between unbounded preceding and current row
        ) as run_number
    from runs_started
),

runs_named as (
    select
        *,
        first_value(segment_name) over (
            partition by environment_id, identity, segment_id, run_number
            order by delivery_number desc
        ) as latest_segment_name
    from runs_numbered
),

runs_aggregated as (
    select
        environment_id,
        identity,
        segment_id,
        run_number,
        latest_segment_name as segment_name,
        min(received_at) as valid_from,
        max(received_at) as last_evaluated_at,
        max(delivery_number) as last_delivery_number,
        cast(sum(deliveries_at_instant) as bigint) as evaluation_count
    from runs_named
    group by
        environment_id,
        identity,
        segment_id,
        run_number,
        latest_segment_name
),

periods_closed as (
    select
        runs_aggregated.environment_id,
        runs_aggregated.identity,
        runs_aggregated.segment_id,
        runs_aggregated.valid_from,
        runs_aggregated.segment_name,
        next_delivery.received_at as valid_to,
        runs_aggregated.last_evaluated_at,
        runs_aggregated.evaluation_count,
        next_delivery.delivery_id is null as is_current,
        last_delivery.transform_batch_at
    from runs_aggregated
    {{ flagsmith_warehouse.join_run_ends(
        'runs_aggregated', 'identity_deliveries', 'last_delivery', 'next_delivery'
    ) }}
)

select * from periods_closed
