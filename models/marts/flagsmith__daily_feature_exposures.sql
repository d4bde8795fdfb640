{{ config(**flagsmith_warehouse.incremental_config(
    'flagsmith__flag_evaluations', ['exposure_date', 'environment_id', 'feature_id'],
    rebuild_state='reporting_timezone_state',
    rebuild_after_erasure=true
)) }}

{#- Per local date of received_at in the reporting time zone, feature and variant: identities
    evaluated that day in that variant, evaluations, and identities whose first exposure to the
    feature was that day in that variant.
    Incremental per (day, feature): a run recomputes the days that got new evaluations and the
    days on which an identity with new evaluations was first exposed before this run (a late
    delivery can move a first exposure to an earlier day, which changes both days). The dates
    depend on the reporting time zone: a changed zone rebuilds the mart whole. -#}

with

{# the days a run recomputes; a full build reads every day #}
{% if flagsmith_warehouse.is_incremental_run() %}
first_exposures as (
    select * from {{ ref('flagsmith__first_exposures') }}
),

new_evaluations as (
    -- each CTE reads the relation itself, so its own filter prunes row groups
    select * from {{ ref('flagsmith__flag_evaluations') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
),

pairs_first_seen_now as (
    -- pairs whose first exposure is one of the new evaluations: pairs new to the feature, or a
    -- late delivery that came before everything known of the pair
    select
        environment_id,
        identity,
        feature_id
    from (
        select environment_id, identity, feature_id, min(received_at) as first_new_at
        from new_evaluations
        group by environment_id, identity, feature_id
    ) as new_starts
    where (environment_id, identity, feature_id, first_new_at) in (
        select environment_id, identity, feature_id, first_exposed_at
        from first_exposures
    )
),

earlier_first_exposure_days as (
    -- the day those pairs were first exposed before this run (if they were): it loses one.
    -- Semi-joins here and in pairs_first_seen_now, not inner joins: with inner joins DuckDB
    -- misjudges the pairs as many, then aggregates the whole history before joining or hashes
    -- it, seconds per 5 million evaluations even when no pair qualifies.
    select
        environment_id,
        feature_id,
        {{ flagsmith_warehouse.local_date('min(received_at)') }} as exposure_date
    from {{ ref('flagsmith__flag_evaluations') }}
    where
        (environment_id, identity, feature_id) in (
            select environment_id, identity, feature_id from pairs_first_seen_now
        )
        and not ({{ flagsmith_warehouse.new_input_condition() }})
    group by environment_id, identity, feature_id
),

days_to_recompute as (
    select distinct
        {{ flagsmith_warehouse.local_date('received_at') }} as exposure_date,
        environment_id,
        feature_id
    from new_evaluations
    union
    select exposure_date, environment_id, feature_id from earlier_first_exposure_days
),
{% endif %}

day_evaluations as (
    select
        {{ flagsmith_warehouse.local_date('received_at') }} as exposure_date,
        environment_id,
        feature_id,
        variant,
        identity,
        transform_batch_at
    from {{ ref('flagsmith__flag_evaluations') }}
    {% if flagsmith_warehouse.is_incremental_run() %}
    where
        -- a bound the warehouse can prune on: a local date starts within 14 hours of UTC
        -- midnight, and the date compares at midnight of the session's zone (at most 12 more)
        received_at >= (select min(exposure_date) - 2 from days_to_recompute)
        and ({{ flagsmith_warehouse.local_date('received_at') }}, environment_id, feature_id) in (
            select exposure_date, environment_id, feature_id from days_to_recompute
        )
    {% endif %}
),

exposures_counted as (
    select
        exposure_date,
        environment_id,
        feature_id,
        variant,
        count(distinct identity) as identities,
        count(*) as evaluations,
        max(transform_batch_at) as transform_batch_at
    from day_evaluations
    group by
        exposure_date,
        environment_id,
        feature_id,
        variant
),

first_exposures_counted as (
    select
        {{ flagsmith_warehouse.local_date('first_exposed_at') }} as exposure_date,
        environment_id,
        feature_id,
        first_variant as variant,
        count(*) as first_exposures
    -- the relation, not the CTE: a CTE with two readers is kept whole by the warehouse
    from {{ ref('flagsmith__first_exposures') }}
    {% if flagsmith_warehouse.is_incremental_run() %}
    where
        first_exposed_at >= (select min(exposure_date) - 2 from days_to_recompute)
        and (
            {{ flagsmith_warehouse.local_date('first_exposed_at') }}, environment_id, feature_id
        ) in (
            select exposure_date, environment_id, feature_id from days_to_recompute
        )
    {% endif %}
    group by
        {{ flagsmith_warehouse.local_date('first_exposed_at') }},
        environment_id,
        feature_id,
        first_variant
),

daily_exposures_joined as (
    select
        exposures_counted.exposure_date,
        exposures_counted.environment_id,
        exposures_counted.feature_id,
        exposures_counted.variant,
        exposures_counted.identities,
        exposures_counted.evaluations,
        coalesce(first_exposures_counted.first_exposures, 0) as first_exposures,
        exposures_counted.transform_batch_at
    from exposures_counted
    left join first_exposures_counted
        on
            exposures_counted.exposure_date = first_exposures_counted.exposure_date
            and exposures_counted.environment_id = first_exposures_counted.environment_id
            and exposures_counted.feature_id = first_exposures_counted.feature_id
            and exposures_counted.variant = first_exposures_counted.variant
)

select * from daily_exposures_joined
