{{ config(severity='warn') }}

-- Experiment health: identities the environment default served more than one variant of a
-- multivariate feature (ignoring 'off' and overrides, which are deliberate). Flagsmith buckets
-- an identity by a stable hash, so this means the split itself moved (allocations changed while
-- the experiment ran): those identities saw both arms and contaminate an A/B comparison.
-- Checks the identities of the latest batch (all with flagsmith__test_all_history).

{%- set scoped = flagsmith_warehouse.test_recent_rows_only('transform_batch_at') %}

with

exposure_periods as (
    select * from {{ ref('flagsmith__flag_exposure_periods') }}
),

features as (
    select * from {{ ref('flagsmith__features') }}
),

identities_checked as (
    select distinct environment_id, identity
    from exposure_periods
    {% if scoped %}
    where {{ flagsmith_warehouse.latest_batch_condition(
        ref('flagsmith__flag_exposure_periods'), 'transform_batch_at'
    ) }}
    {% endif %}
),

default_variants as (
    select
        exposure_periods.environment_id,
        exposure_periods.identity,
        exposure_periods.feature_id,
        exposure_periods.variant
    from exposure_periods
    inner join features
        on
            exposure_periods.environment_id = features.environment_id
            and exposure_periods.feature_id = features.feature_id
    where
        features.feature_type = 'MULTIVARIATE'
        and exposure_periods.assignment_source = 'default'
        and exposure_periods.variant != 'off'
        and (exposure_periods.environment_id, exposure_periods.identity) in (
            select environment_id, identity from identities_checked
        )
),

identities_in_several_variants as (
    select
        environment_id,
        identity,
        feature_id,
        count(distinct variant) as variant_count
    from default_variants
    group by environment_id, identity, feature_id
    having count(distinct variant) > 1
)

select * from identities_in_several_variants
