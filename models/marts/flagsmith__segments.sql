{{ config(**flagsmith_warehouse.incremental_config(
    'stg_flagsmith__identity_webhooks', ['environment_id', 'segment_id'],
    rebuild_after_erasure=true
)) }}

{#- One row per segment per environment, counted from every delivery that lists it (member or
    not). The name is the one in the latest such delivery. Incrementally, a segment's row combines
    what it holds with the new listings. current_member_count (identities whose latest delivery
    lists them as members, i.e. with a current membership period) is recounted for every segment
    on every run: an identity leaves by a delivery that need not list the segment at all, and the
    count reads only current periods, not history. -#}

with

new_listings as (
    select * from {{ ref('stg_flagsmith__segment_memberships') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
),

segment_periods as (
    select * from {{ ref('flagsmith__segment_membership_periods') }}
),

candidates as (
    -- per segment, the latest of the new listings
    select
        environment_id,
        segment_id,
        {{ flagsmith_warehouse.value_at_latest('segment_name', ['received_at', 'delivery_id']) }}
            as segment_name,
        min(received_at) as first_seen_at,
        max(received_at) as last_seen_at,
        {{ flagsmith_warehouse.value_at_latest('delivery_id', ['received_at', 'delivery_id']) }}
            as latest_delivery_id,
        max(transform_batch_at) as transform_batch_at
    from new_listings
    group by environment_id, segment_id
    {% if flagsmith_warehouse.is_incremental_run() %}
    union all
    select
        environment_id,
        segment_id,
        segment_name,
        first_seen_at,
        last_seen_at,
        latest_delivery_id,
        transform_batch_at
    from {{ this }}
    {% endif %}
),

candidates_ranked as (
    select
        *,
        min(first_seen_at) over (partition by environment_id, segment_id) as first_seen_overall,
        max(transform_batch_at) over (partition by environment_id, segment_id) as newest_batch,
        row_number() over (
            partition by environment_id, segment_id
            order by last_seen_at desc, latest_delivery_id desc
        ) as recency
    from candidates
),

current_members_counted as (
    select
        environment_id,
        segment_id,
        count(*) as current_member_count
    from segment_periods
    where is_current
    group by environment_id, segment_id
),

segments_combined as (
    select
        candidates_ranked.environment_id,
        candidates_ranked.segment_id,
        candidates_ranked.segment_name,
        candidates_ranked.first_seen_overall as first_seen_at,
        candidates_ranked.last_seen_at,
        coalesce(current_members_counted.current_member_count, 0) as current_member_count,
        candidates_ranked.latest_delivery_id,
        candidates_ranked.newest_batch as transform_batch_at
    from candidates_ranked
    left join current_members_counted
        on
            {{ flagsmith_warehouse.environment_scope('candidates_ranked.environment_id') }}
            = {{ flagsmith_warehouse.environment_scope(
                'current_members_counted.environment_id'
            ) }}
            and candidates_ranked.segment_id = current_members_counted.segment_id
    where candidates_ranked.recency = 1
)

select * from segments_combined
