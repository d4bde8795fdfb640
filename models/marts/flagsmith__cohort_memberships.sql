{{ config(**flagsmith_warehouse.incremental_config(
    'stg_flagsmith__identity_webhooks', ['environment_id', 'identity'],
    replace_new_identities=true
)) }}

{#- Cohorts an analyst segments by, as entry and exit times:
    - feature_variant: runs of one `variant` of a feature (cohort_key `feature_name=variant`),
      over the deliveries that carry the feature; consecutive exposure periods with the same
      variant (e.g. an override that serves the same value) are one membership;
    - segment: the segment membership periods (cohort_key = segment name).
    Incremental per identity: identities whose periods were recomputed in this run. -#}

with

exposure_periods as (
    select * from {{ ref('flagsmith__flag_exposure_periods') }}
),

segment_periods as (
    select * from {{ ref('flagsmith__segment_membership_periods') }}
),

{% if flagsmith_warehouse.is_incremental_run() %}
identities_recomputed as (
    -- every identity with new deliveries (whose segment periods may all have ended, see
    -- flagsmith_replace_partitions), and every identity whose periods were recomputed; read
    -- from the relations themselves, so the watermark prunes row groups and the warehouse keeps
    -- no copy of a CTE with two readers
    select environment_id, identity from {{ ref('stg_flagsmith__identity_webhooks') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
    union
    select environment_id, identity from {{ ref('flagsmith__flag_exposure_periods') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
    union
    select environment_id, identity from {{ ref('flagsmith__segment_membership_periods') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
),
{% endif %}

periods_of_identities as (
    select * from exposure_periods
    {% if flagsmith_warehouse.is_incremental_run() %}
    where (environment_id, identity) in (
        select environment_id, identity from identities_recomputed
    )
    {% endif %}
),

segment_periods_of_identities as (
    select * from segment_periods
    {% if flagsmith_warehouse.is_incremental_run() %}
    where ({{ flagsmith_warehouse.environment_scope('environment_id') }}, identity) in (
        select {{ flagsmith_warehouse.environment_scope('environment_id') }}, identity
        from identities_recomputed
    )
    {% endif %}
),

variant_runs_bounded as (
    -- one pass over each feature's periods in order: a period starts a variant run when the one
    -- before it has another variant, and ends one when the one after it does
    select
        *,
        (variant is distinct from lag(variant) over period_order) as is_run_start,
        (variant is distinct from lead(variant) over period_order) as is_run_end,
        max(transform_batch_at) over (
            partition by environment_id, identity, feature_id
        ) as newest_batch
    from periods_of_identities
    window period_order as (
        partition by environment_id, identity, feature_id
        order by valid_from
    )
),

variant_runs_closed as (
    -- a run's first period, with the name at its last period (itself, or the next boundary)
    -- and the start of the next run
    select
        environment_id,
        identity,
        is_run_start,
        case
            when is_run_end then feature_name else lead(feature_name) over boundary_order
        end as latest_feature_name,
        variant,
        valid_from as entered_at,
        case
            when is_run_end then lead(valid_from) over boundary_order
            else lead(valid_from, 2) over boundary_order
        end as exited_at,
        newest_batch as transform_batch_at
    from variant_runs_bounded
    where is_run_start or is_run_end
    window boundary_order as (
        partition by environment_id, identity, feature_id
        order by valid_from
    )
),

feature_variant_memberships as (
    select
        environment_id,
        identity,
        'feature_variant' as cohort_type,
        latest_feature_name || '=' || variant as cohort_key,
        entered_at,
        exited_at,
        transform_batch_at
    from variant_runs_closed
    where is_run_start
),

segment_memberships as (
    select
        environment_id,
        identity,
        'segment' as cohort_type,
        segment_name as cohort_key,
        valid_from as entered_at,
        valid_to as exited_at,
        transform_batch_at
    from segment_periods_of_identities
),

memberships_unioned as (
    select * from feature_variant_memberships
    union all
    select * from segment_memberships
)

select * from memberships_unioned
