{{ config(**flagsmith_warehouse.incremental_config(
    'flagsmith__flag_evaluations', ['environment_id', 'identity', 'feature_id']
)) }}

{#- Gaps and islands over the evaluations of one feature for one identity, ordered by
    (received_at, delivery_id). A delivery that does not carry the feature has no row here, so it
    neither continues nor ends a run.

    Evaluations of a pair with the same received_at (two workers or two receivers stamping the
    same microsecond) are one instant: their true order is unknown, so the last by delivery_id
    stands for the instant's state, and all of them count as evaluations of its period. Periods
    thus start at distinct times.

    Incremental per (identity, feature) with new evaluations, without rereading its history: the
    existing periods of the pair are runs already found, so they go back into the gaps-and-islands
    as items that stand for all their evaluations (count, first and last). New evaluations are
    items of one instant. Consecutive items in the same state form one period, exactly as the
    evaluations they stand for would. Only a period that a late evaluation falls inside (or on
    its first or last instant) can be split; that period alone is opened up into its
    evaluations. A full refresh is the same computation with no existing periods. -#}

{%- set state_columns = ['enabled', 'value', 'value_type', 'variant', 'assignment_source'] %}

with

new_evaluations as materialized (
    -- read from the relation itself, not the shared CTE, so the watermark prunes row groups
    select * from {{ ref('flagsmith__flag_evaluations') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
),

{% if is_incremental() %}
pairs_with_new_evaluations as (
    select distinct environment_id, identity, feature_id from new_evaluations
),

existing_periods as materialized (
    select existing.*
    from {{ this }} as existing
    inner join pairs_with_new_evaluations as pairs
        on
            existing.environment_id = pairs.environment_id
            and existing.identity = pairs.identity
            and existing.feature_id = pairs.feature_id
),

periods_split_by_late_evaluations as materialized (
    select distinct
        existing_periods.environment_id,
        existing_periods.identity,
        existing_periods.feature_id,
        existing_periods.valid_from,
        existing_periods.first_delivery_id,
        existing_periods.last_evaluated_at,
        existing_periods.last_delivery_id
    from existing_periods
    inner join new_evaluations
        on
            existing_periods.environment_id = new_evaluations.environment_id
            and existing_periods.identity = new_evaluations.identity
            and existing_periods.feature_id = new_evaluations.feature_id
            -- inclusive: a new evaluation at a period's first or last instant joins that
            -- instant, whose state then depends on all of its evaluations
            and new_evaluations.received_at >= existing_periods.valid_from
            and new_evaluations.received_at <= existing_periods.last_evaluated_at
),

evaluations_of_split_periods as (
    select all_evaluations.*
    from {{ ref('flagsmith__flag_evaluations') }} as all_evaluations
    inner join periods_split_by_late_evaluations as split
        on
            all_evaluations.environment_id = split.environment_id
            and all_evaluations.identity = split.identity
            and all_evaluations.feature_id = split.feature_id
            and (all_evaluations.received_at, all_evaluations.delivery_id)
                between (split.valid_from, split.first_delivery_id)
                and (split.last_evaluated_at, split.last_delivery_id)
    where
        -- nothing to read (and no scan) in the usual case, when no late delivery split a period
        all_evaluations.received_at
            >= (select min(valid_from) from periods_split_by_late_evaluations)
        and not ({{ flagsmith_warehouse.new_input_condition() }})
),

periods_kept_whole as (
    select existing_periods.*
    from existing_periods
    left join periods_split_by_late_evaluations as split
        on
            existing_periods.environment_id = split.environment_id
            and existing_periods.identity = split.identity
            and existing_periods.feature_id = split.feature_id
            and existing_periods.valid_from = split.valid_from
            and existing_periods.first_delivery_id = split.first_delivery_id
    where split.valid_from is null
),
{% endif %}

evaluations_to_place as (
    -- the new evaluations, and on a late delivery the old ones of the periods it splits
    select * from new_evaluations
    {% if is_incremental() %}
    union all
    select * from evaluations_of_split_periods
    {% endif %}
),

evaluations_in_instants as (
    -- evaluations of a pair with the same received_at are one instant: their true order is
    -- unknown, so the last by delivery_id stands for the instant's state, and all of them count
    select
        *,
        row_number() over (instant order by delivery_id desc) as rank_in_instant,
        count(*) over instant as evaluations_at_instant,
        min(delivery_id) over instant as first_delivery_at_instant,
        first_value(environment_key) over (instant order by delivery_id)
            as first_environment_key_at_instant,
        max(transform_batch_at) over instant as last_batch_at_instant
    from evaluations_to_place
    window instant as (partition by environment_id, identity, feature_id, received_at)
),

evaluation_items as (
    select
        environment_id,
        identity,
        feature_id,
        {% for column in state_columns %}{{ column }},
        {% endfor -%}
        received_at as starts_at,
        first_delivery_at_instant as starts_with_delivery_id,
        received_at as ends_at,
        delivery_id as ends_with_delivery_id,
        evaluations_at_instant as evaluation_count,
        feature_name,
        first_environment_key_at_instant as environment_key,
        last_batch_at_instant as transform_batch_at
    from evaluations_in_instants
    where rank_in_instant = 1
),

items as (
    select * from evaluation_items
    {% if is_incremental() %}
    union all
    select
        environment_id,
        identity,
        feature_id,
        {% for column in state_columns %}{{ column }},
        {% endfor -%}
        valid_from,
        first_delivery_id,
        last_evaluated_at,
        last_delivery_id,
        evaluation_count,
        feature_name,
        environment_key,
        transform_batch_at
    from periods_kept_whole
    {% endif %}
),

items_compared as (
    select
        *,
        row_number() over item_order = 1
        {% for column in state_columns -%}
        or {{ column }} is distinct from lag({{ column }}) over item_order
        {% endfor -%}
            as is_run_start
    from items
    window item_order as (
        partition by environment_id, identity, feature_id
        order by starts_at, starts_with_delivery_id
    )
),

runs_numbered as (
    select
        *,
        sum(case when is_run_start then 1 else 0 end) over (
            partition by environment_id, identity, feature_id
            order by starts_at, starts_with_delivery_id
            rows between unbounded preceding and current row
        ) as run_number
    from items_compared
),

runs_aggregated as (
    -- the state columns are constant within a run; grouping by them keeps them (null-safely)
    select
        environment_id,
        identity,
        feature_id,
        run_number,
        {% for column in state_columns %}{{ column }},
        {% endfor -%}
        min(starts_at) as valid_from,
        {{ flagsmith_warehouse.value_at_earliest(
            'starts_with_delivery_id', ['starts_at', 'starts_with_delivery_id']
        ) }} as first_delivery_id,
        max(ends_at) as last_evaluated_at,
        {{ flagsmith_warehouse.value_at_latest(
            'ends_with_delivery_id', ['ends_at', 'ends_with_delivery_id']
        ) }} as last_delivery_id,
        sum(evaluation_count) as evaluation_count,
        {{ flagsmith_warehouse.value_at_latest(
            'feature_name', ['ends_at', 'ends_with_delivery_id']
        ) }} as feature_name,
        {{ flagsmith_warehouse.value_at_earliest(
            'environment_key', ['starts_at', 'starts_with_delivery_id']
        ) }} as environment_key,
        max(transform_batch_at) as transform_batch_at
    from runs_numbered
    group by
        environment_id,
        identity,
        feature_id,
        run_number,
        {% for column in state_columns %}{{ column }}{{ ',' if not loop.last }}
        {% endfor %}
),

periods_closed as (
    select
        environment_id,
        identity,
        feature_id,
        valid_from,
        feature_name,
        {% for column in state_columns %}{{ column }},
        {% endfor -%}
        lead(valid_from) over (
            partition by environment_id, identity, feature_id
            order by run_number
        ) as valid_to,
        last_evaluated_at,
        cast(evaluation_count as bigint) as evaluation_count,
        environment_key,
        first_delivery_id,
        last_delivery_id,
        transform_batch_at
    from runs_aggregated
),

currency_flagged as (
    select
        environment_id,
        identity,
        feature_id,
        valid_from,
        feature_name,
        {% for column in state_columns %}{{ column }},
        {% endfor -%}
        valid_to,
        last_evaluated_at,
        evaluation_count,
        valid_to is null as is_current,
        environment_key,
        first_delivery_id,
        last_delivery_id,
        transform_batch_at
    from periods_closed
)

select * from currency_flagged
