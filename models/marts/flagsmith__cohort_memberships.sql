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

identities_recomputed as (
    -- every identity with new deliveries (whose segment periods may all have ended, see
    -- flagsmith_replace_partitions), and every identity whose periods were recomputed
    select environment_id, identity from {{ ref('stg_flagsmith__identity_webhooks') }}
    where {{ flagsmith_warehouse.new_input_condition() }}
    union
    select environment_id, identity from exposure_periods
    where {{ flagsmith_warehouse.new_input_condition() }}
    union
    select environment_id, identity from segment_periods
    where {{ flagsmith_warehouse.new_input_condition() }}
),

periods_of_identities as (
    select * from exposure_periods
    {% if is_incremental() %}
    where (environment_id, identity) in (
        select environment_id, identity from identities_recomputed
    )
    {% endif %}
),

segment_periods_of_identities as (
    select * from segment_periods
    {% if is_incremental() %}
    where ({{ flagsmith_warehouse.partition_key('environment_id') }}, identity) in (
        select {{ flagsmith_warehouse.partition_key('environment_id') }}, identity
        from identities_recomputed
    )
    {% endif %}
),

variant_runs_started as (
    select
        *,
        variant is distinct from lag(variant) over period_order as is_run_start
    from periods_of_identities
    window period_order as (
        partition by environment_id, identity, feature_id
        order by valid_from
    )
),

variant_runs_numbered as (
    select
        *,
        sum(case when is_run_start then 1 else 0 end) over (
            partition by environment_id, identity, feature_id
            order by valid_from
            rows between unbounded preceding and current row
        ) as run_number
    from variant_runs_started
),

variant_runs_named as (
    select
        *,
        first_value(feature_name) over (
            partition by environment_id, identity, feature_id, run_number
            order by valid_from desc
        ) as latest_feature_name
    from variant_runs_numbered
),

variant_runs_aggregated as (
    select
        environment_id,
        identity,
        feature_id,
        run_number,
        latest_feature_name,
        variant,
        min(valid_from) as entered_at,
        max(transform_batch_at) as transform_batch_at
    from variant_runs_named
    group by
        environment_id,
        identity,
        feature_id,
        run_number,
        latest_feature_name,
        variant
),

feature_variant_memberships as (
    select
        environment_id,
        identity,
        'feature_variant' as cohort_type,
        latest_feature_name || '=' || variant as cohort_key,
        entered_at,
        lead(entered_at) over (
            partition by environment_id, identity, feature_id
            order by run_number
        ) as exited_at,
        transform_batch_at
    from variant_runs_aggregated
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
