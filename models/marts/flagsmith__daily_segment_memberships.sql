{{ config(**flagsmith_warehouse.incremental_config(
    'stg_flagsmith__identity_webhooks', ['environment_id'],
    replace_new_input_of='stg_flagsmith__identity_webhooks',
    rebuild_state='reporting_timezone_state',
    rebuild_after_erasure=true
)) }}

{#- A segment's size per local date (reporting time zone), from its first membership to the
    local date of the newest delivery of its environment: every date, also those without change.
    members(d) = periods begun on or before d and not ended on or before d, i.e. the running sum
    of entered minus exited (a period never ends on a date before the one it began on).
    Incremental per environment: every environment with new deliveries is recomputed from the
    membership periods of its segments (the last date moves with its newest delivery, and a late
    delivery can change any period of its identity); the model reads periods, never deliveries.
    A changed reporting time zone rebuilds it whole. -#}

with

environments_with_new_deliveries as (
    {{ flagsmith_warehouse.new_input_keys_sql(
        ref('stg_flagsmith__identity_webhooks'), ['environment_id'], 'environment_id is not null'
    ) }}
),

environment_last_dates as (
    select
        environment_id,
        {{ flagsmith_warehouse.local_date('max(last_seen_at)') }} as last_date,
        max(transform_batch_at) as transform_batch_at
    from {{ ref('int_flagsmith__identities') }}
    where
        environment_id in (
            select environments_with_new_deliveries.environment_id
            from environments_with_new_deliveries
        )
    group by environment_id
),

period_dates as (
    select
        environment_id,
        segment_id,
        {{ flagsmith_warehouse.local_date('valid_from') }} as from_date,
        {{ flagsmith_warehouse.local_date('valid_to') }} as to_date
    from {{ ref('flagsmith__segment_membership_periods') }}
    where
        environment_id in (
            select environments_with_new_deliveries.environment_id
            from environments_with_new_deliveries
        )
),

entries_counted as (
    select
        environment_id,
        segment_id,
        from_date as membership_date,
        count(*) as entered
    from period_dates
    group by environment_id, segment_id, from_date
),

exits_counted as (
    select
        environment_id,
        segment_id,
        to_date as membership_date,
        count(*) as exited
    from period_dates
    where to_date is not null
    group by environment_id, segment_id, to_date
),

segment_spans as (
    select
        period_dates.environment_id,
        period_dates.segment_id,
        min(period_dates.from_date) as first_date,
        max(environment_last_dates.last_date) as last_date,
        max(environment_last_dates.transform_batch_at) as transform_batch_at
    from period_dates
    inner join environment_last_dates
        on period_dates.environment_id = environment_last_dates.environment_id
    group by period_dates.environment_id, period_dates.segment_id
),

segment_days as (
    select
        segment_spans.environment_id,
        segment_spans.segment_id,
        cast(days.spine_date as date) as membership_date,
        segment_spans.transform_batch_at
    from segment_spans
    {{ flagsmith_warehouse.dates_between(
        'segment_spans.first_date', 'segment_spans.last_date', 'days'
    ) }}
),

days_counted as (
    select
        segment_days.membership_date,
        segment_days.environment_id,
        segment_days.segment_id,
        coalesce(entries_counted.entered, 0) as entered,
        coalesce(exits_counted.exited, 0) as exited,
        segment_days.transform_batch_at
    from segment_days
    left join entries_counted
        on
            segment_days.environment_id = entries_counted.environment_id
            and segment_days.segment_id = entries_counted.segment_id
            and segment_days.membership_date = entries_counted.membership_date
    left join exits_counted
        on
            segment_days.environment_id = exits_counted.environment_id
            and segment_days.segment_id = exits_counted.segment_id
            and segment_days.membership_date = exits_counted.membership_date
),

members_summed as (
    select
        days_counted.membership_date,
        days_counted.environment_id,
        days_counted.segment_id,
        segments.segment_name,
        cast(sum(days_counted.entered - days_counted.exited) over (
            partition by days_counted.environment_id, days_counted.segment_id
            order by days_counted.membership_date
            rows between unbounded preceding and current row
        ) as bigint) as members,
        cast(days_counted.entered as bigint) as entered,
        cast(days_counted.exited as bigint) as exited,
        days_counted.transform_batch_at
    from days_counted
    inner join {{ ref('flagsmith__segments') }} as segments
        on
            days_counted.environment_id = segments.environment_id
            and days_counted.segment_id = segments.segment_id
)

select * from members_summed
