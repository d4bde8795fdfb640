{#- Conversion by arm: for each experiment and arm, the identities exposed and how many of them
    converted (had the conversion event after their first exposure), leaving out identities that
    saw more than one arm. Run with `dbt compile --select conversion_by_arm` and the vars:

    - flagsmith__analysis_events: your events relation (schema.table or a model name) with
      columns user_id (text, the key flagsmith__experiment_exposures.user_id holds: the identity,
      or your user key through var flagsmith__identity_map), event_name, occurred_at (timestamp
      with time zone);
    - flagsmith__analysis_conversion_event: the event_name that counts (default 'purchase').

    Time zones: first_exposed_at and occurred_at are compared as instants (timestamps with time
    zone), so the zone of either side does not matter; if your events are stored as local
    timestamps without a zone, convert them to UTC first or conversions near the exposure land on
    the wrong side of it. -#}

{#- Without the var the analysis still compiles (dbt docs generate compiles every analysis), but
    reads a relation whose name says what is missing, so running it fails with that name. -#}
{%- set events = flagsmith_warehouse.relation_from_var('flagsmith__analysis_events')
    or 'set_var_flagsmith__analysis_events_to_your_events_relation' %}

with

exposures as (
    select * from {{ ref('flagsmith__experiment_exposures') }}
    where not is_multi_arm
),

conversions as (
    select
        user_id,
        occurred_at
    from {{ events }}
    where event_name = '{{ var("flagsmith__analysis_conversion_event", "purchase") }}'
),

exposures_converted as (
    select
        exposures.environment_id,
        exposures.feature_id,
        exposures.feature_name,
        exposures.first_arm as arm,
        exposures.identity,
        max(case when conversions.occurred_at >= exposures.first_exposed_at then 1 else 0 end)
            as converted
    from exposures
    left join conversions
        on exposures.user_id = conversions.user_id
    group by
        exposures.environment_id,
        exposures.feature_id,
        exposures.feature_name,
        exposures.first_arm,
        exposures.identity
),

arms_compared as (
    select
        environment_id,
        feature_id,
        feature_name,
        arm,
        count(*) as identities,
        cast(sum(converted) as bigint) as converted,
        cast(sum(converted) as double precision) / count(*) as conversion_rate
    from exposures_converted
    group by environment_id, feature_id, feature_name, arm
)

select * from arms_compared
order by environment_id, feature_id, arm
