{{ config(**flagsmith_warehouse.incremental_config(
    'flagsmith__flag_evaluations', ['environment_id', 'feature_id'],
    rebuild_after_erasure=true
)) }}

{#- One row per feature per environment. Attributes come from the latest evaluation, by
    (received_at, delivery_id). Incrementally, a feature's row combines what it already holds
    with the new evaluations: the latest of the two wins, first and last seen are the least and
    the greatest; identities_exposed is recounted from the first exposures. -#}

with

first_exposures as (
    select * from {{ ref('flagsmith__first_exposures') }}
),

new_evaluations_summarized as (
    -- the big input is read twice (here and for the latest rows) rather than kept as a CTE:
    -- a scan is cheap, holding millions of wide rows is not
    select
        environment_id,
        feature_id,
        min(received_at) as first_seen_at,
        max(received_at) as latest_received_at,
        max(transform_batch_at) as transform_batch_at
    from {{ ref('flagsmith__flag_evaluations') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
    group by environment_id, feature_id
),

latest_new_evaluations as (
    -- the new evaluations at each feature's latest instant: usually one
    select evaluations.*
    from {{ ref('flagsmith__flag_evaluations') }} as evaluations
    inner join new_evaluations_summarized as summarized
        on
            evaluations.environment_id = summarized.environment_id
            and evaluations.feature_id = summarized.feature_id
            and evaluations.received_at = summarized.latest_received_at
    where {{ flagsmith_warehouse.new_input_condition('evaluations.transform_batch_at') }}
),

candidates as (
    -- per feature, the latest of the new evaluations (by received_at, then delivery_id)
    select
        latest.environment_id,
        latest.feature_id,
        max(summarized.latest_received_at) as latest_received_at,
        max(latest.delivery_id) as latest_delivery_id,
        {% for column, source in [
            ('feature_name', 'feature_name'),
            ('feature_type', 'feature_type'),
            ('default_enabled', 'feature_default_enabled'),
            ('initial_value', 'feature_initial_value'),
            ('description', 'feature_description'),
            ('created_date', 'feature_created_date'),
        ] -%}
        {{ flagsmith_warehouse.value_at_latest('latest.' ~ source, ['latest.delivery_id']) }}
            as {{ column }},
        {% endfor -%}
        min(summarized.first_seen_at) as first_seen_at,
        max(summarized.transform_batch_at) as transform_batch_at
    from latest_new_evaluations as latest
    inner join new_evaluations_summarized as summarized
        on
            latest.environment_id = summarized.environment_id
            and latest.feature_id = summarized.feature_id
    group by latest.environment_id, latest.feature_id
    {% if flagsmith_warehouse.is_incremental_run() %}
    union all
    select
        environment_id,
        feature_id,
        last_seen_at,
        latest_delivery_id,
        feature_name,
        feature_type,
        default_enabled,
        initial_value,
        description,
        created_date,
        first_seen_at,
        transform_batch_at
    from {{ this }}
    where (environment_id, feature_id) in (
        select
            new_evaluations_summarized.environment_id,
            new_evaluations_summarized.feature_id
        from new_evaluations_summarized
    )
    {% endif %}
),

candidates_ranked as (
    select
        *,
        min(first_seen_at) over (partition by environment_id, feature_id) as first_seen_overall,
        max(transform_batch_at) over (partition by environment_id, feature_id) as newest_batch,
        row_number() over (
            partition by environment_id, feature_id
            order by latest_received_at desc, latest_delivery_id desc
        ) as recency
    from candidates
),

exposed_counted as (
    select
        environment_id,
        feature_id,
        count(*) as identities_exposed
    from first_exposures
    where (environment_id, feature_id) in (
        select
            new_evaluations_summarized.environment_id,
            new_evaluations_summarized.feature_id
        from new_evaluations_summarized
    )
    group by environment_id, feature_id
),

features_combined as (
    select
        candidates_ranked.environment_id,
        candidates_ranked.feature_id,
        candidates_ranked.feature_name,
        candidates_ranked.feature_type,
        candidates_ranked.default_enabled,
        candidates_ranked.initial_value,
        candidates_ranked.description,
        candidates_ranked.created_date,
        candidates_ranked.first_seen_overall as first_seen_at,
        candidates_ranked.latest_received_at as last_seen_at,
        exposed_counted.identities_exposed,
        candidates_ranked.latest_delivery_id,
        candidates_ranked.newest_batch as transform_batch_at
    from candidates_ranked
    inner join exposed_counted
        on
            candidates_ranked.environment_id = exposed_counted.environment_id
            and candidates_ranked.feature_id = exposed_counted.feature_id
    where candidates_ranked.recency = 1
)

select * from features_combined
