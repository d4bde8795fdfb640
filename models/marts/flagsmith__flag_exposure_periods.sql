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
    evaluations. A full refresh is the same computation with no existing periods.

    One sort of the items does the work: each item learns from its neighbours whether it starts
    and whether it ends a run, and a running count of evaluations; only those boundary items go
    on, and a second, small pass pairs each run's first item with its last. Instants shared by
    several deliveries are found among the deliveries and grouped apart, so the common case needs
    no grouping. A period's transform_batch_at is the newest of its pair's items. -#}

{%- set state_columns = ['enabled', 'value', 'value_type', 'variant', 'assignment_source'] %}
{#- spelled out where a frame is added: Spark does not refine a named window -#}
{%- set item_order =
    'partition by environment_id, identity, feature_id order by starts_at, starts_with_delivery_id'
%}

with

new_evaluations as {{ flagsmith_warehouse.materialized_cte() }} (
    -- read from the relation itself, not the shared CTE, so the watermark prunes row groups
    select * from {{ ref('flagsmith__flag_evaluations') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
),

{% if flagsmith_warehouse.is_incremental_run() %}
pairs_with_new_evaluations as (
    select distinct environment_id, identity, feature_id from new_evaluations
),

existing_periods as {{ flagsmith_warehouse.materialized_cte() }} (
    select existing.*
    from {{ this }} as existing
    inner join pairs_with_new_evaluations as pairs
        on
            existing.environment_id = pairs.environment_id
            and existing.identity = pairs.identity
            and existing.feature_id = pairs.feature_id
),

periods_split_by_late_evaluations as {{ flagsmith_warehouse.materialized_cte() }} (
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
    {% if flagsmith_warehouse.is_incremental_run() %}
    union all
    select * from evaluations_of_split_periods
    {% endif %}
),

tied_instants as (
    -- (identity, received_at) shared by two deliveries of an identity: rare. A full build finds
    -- them among the deliveries (50 times fewer rows than evaluations), an incremental run among
    -- the evaluations it places (a tie with an old delivery re-reads that delivery's
    -- evaluations, since a late evaluation splits the period holding its instant); either way
    -- the common path needs no grouping or extra sort
    {% if flagsmith_warehouse.is_incremental_run() %}
    select
        identity,
        received_at
    from evaluations_to_place
    group by identity, received_at
    having count(distinct delivery_id) > 1
    {% else %}
    select
        identity,
        received_at
    from {{ ref('stg_flagsmith__identity_webhooks') }}
    group by identity, received_at
    having count(*) > 1
    {% endif %}
),

single_evaluation_items as (
    -- an evaluation alone at its instant is an item of its own
    select
        environment_id,
        identity,
        feature_id,
        {% for column in state_columns %}{{ column }},
        {% endfor -%}
        received_at as starts_at,
        delivery_id as starts_with_delivery_id,
        received_at as ends_at,
        delivery_id as ends_with_delivery_id,
        1 as evaluation_count,
        feature_name,
        environment_key,
        transform_batch_at
    from evaluations_to_place
    where (identity, received_at) not in (
        select
            tied_instants.identity,
            tied_instants.received_at
        from tied_instants
    )
),

tied_evaluation_items as (
    -- evaluations of a pair with the same received_at are one instant: their true order is
    -- unknown, so the last by delivery_id stands for the instant's state, and all of them count
    select
        environment_id,
        identity,
        feature_id,
        {% for column in state_columns -%}
        {{ flagsmith_warehouse.value_at_latest(column, ['delivery_id']) }} as {{ column }},
        {% endfor -%}
        received_at as starts_at,
        min(delivery_id) as starts_with_delivery_id,
        received_at as ends_at,
        max(delivery_id) as ends_with_delivery_id,
        count(*) as evaluation_count,
        {{ flagsmith_warehouse.value_at_latest('feature_name', ['delivery_id']) }} as feature_name,
        {{ flagsmith_warehouse.value_at_earliest('environment_key', ['delivery_id']) }}
            as environment_key,
        max(transform_batch_at) as transform_batch_at
    from evaluations_to_place
    where (identity, received_at) in (
        select
            tied_instants.identity,
            tied_instants.received_at
        from tied_instants
    )
    group by environment_id, identity, feature_id, received_at
),

items as (
    select * from single_evaluation_items
    union all
    select * from tied_evaluation_items
    {% if flagsmith_warehouse.is_incremental_run() %}
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
    -- one pass over the pair's items in order: an item starts a run when the one before it is
    -- in another state (or there is none), and ends one when the one after it is
    select
        *,
        lag(starts_at) over item_order is null
        {% for column in state_columns -%}
        or ({{ column }} is distinct from lag({{ column }}) over item_order)
        {% endfor -%}
            as is_run_start,
        lead(starts_at) over item_order is null
        {% for column in state_columns -%}
        or ({{ column }} is distinct from lead({{ column }}) over item_order)
        {% endfor -%}
            as is_run_end,
        sum(evaluation_count) over (
            {{ item_order }} rows between unbounded preceding and current row
        ) as evaluations_through,
        max(transform_batch_at) over (
            {{ item_order }} rows between unbounded preceding and unbounded following
        ) as newest_batch
    from items
    window item_order as ({{ item_order }})
),

run_boundaries as (
    select * from items_compared
    where is_run_start or is_run_end
),

runs_closed as (
    -- a run's first item, with what its last item (itself, or the next boundary) says
    select
        environment_id,
        identity,
        feature_id,
        is_run_start,
        starts_at as valid_from,
        {% for column in state_columns %}{{ column }},
        {% endfor -%}
        case
            when is_run_end then feature_name else lead(feature_name) over boundary_order
        end as feature_name,
        case
            when is_run_end then lead(starts_at) over boundary_order
            else lead(starts_at, 2) over boundary_order
        end as valid_to,
        case
            when is_run_end then ends_at else lead(ends_at) over boundary_order
        end as last_evaluated_at,
        case
            when is_run_end then evaluations_through
            else lead(evaluations_through) over boundary_order
        end - evaluations_through + evaluation_count as evaluation_count,
        environment_key,
        starts_with_delivery_id as first_delivery_id,
        case
            when is_run_end then ends_with_delivery_id
            else lead(ends_with_delivery_id) over boundary_order
        end as last_delivery_id,
        newest_batch as transform_batch_at
    from run_boundaries
    window boundary_order as (
        partition by environment_id, identity, feature_id
        order by starts_at, starts_with_delivery_id
    )
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
        cast(evaluation_count as bigint) as evaluation_count,
        valid_to is null as is_current,
        environment_key,
        first_delivery_id,
        last_delivery_id,
        transform_batch_at
    from runs_closed
    where is_run_start
)

select * from currency_flagged
