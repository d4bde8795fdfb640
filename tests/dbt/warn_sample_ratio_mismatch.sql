{{ config(severity='warn') }}

-- Experiment health: a sample-ratio-mismatch check of each multivariate feature. Identities
-- first exposed to a variant by the environment default (not 'off', not an override) are
-- compared with the split Flagsmith reports in `percentage_allocation`, by a chi-square test at
-- p < 0.001 (critical values for 1 to 10 degrees of freedom). Returns the features whose counts
-- are implausible under the reported split: the assignment or the logging is broken, and an
-- A/B readout on them is not to be trusted. The expected split is the latest reported
-- allocation of each variant (from the latest batch unless flagsmith__test_all_history), so a
-- split changed mid-experiment also shows here. Needs 100 identities and 5 expected per variant.

{%- set scoped = flagsmith_warehouse.test_recent_rows_only('transform_batch_at') %}

with

flag_evaluations as (
    select * from {{ ref('flagsmith__flag_evaluations') }}
),

first_exposures as (
    select * from {{ ref('flagsmith__first_exposures') }}
),

allocations_reported as (
    select
        environment_id,
        feature_id,
        value,
        percentage_allocation,
        row_number() over (
            partition by environment_id, feature_id, value
            order by received_at desc, delivery_id desc
        ) as recency
    from flag_evaluations
    where
        feature_type = 'MULTIVARIATE'
        and enabled
        and assignment_source = 'default'
        and percentage_allocation is not null
        {% if scoped %}
        and {{ flagsmith_warehouse.latest_batch_condition(
            ref('flagsmith__flag_evaluations'), 'transform_batch_at'
        ) }}
        {% endif %}
),

latest_allocations as (
    select
        environment_id,
        feature_id,
        value as variant,
        percentage_allocation
    from allocations_reported
    where recency = 1
),

first_exposures_counted as (
    select
        first_exposures.environment_id,
        first_exposures.feature_id,
        first_exposures.first_variant as variant,
        count(*) as identities
    from first_exposures
    where
        first_exposures.first_assignment_source = 'default'
        and first_exposures.first_variant != 'off'
    group by
        first_exposures.environment_id,
        first_exposures.feature_id,
        first_exposures.first_variant
),

variants_compared as (
    select
        latest_allocations.environment_id,
        latest_allocations.feature_id,
        latest_allocations.variant,
        coalesce(first_exposures_counted.identities, 0) as observed,
        -- nullif: a zero denominator gives null (ignored by the sums), as DuckDB's division
        -- does; Postgres would raise instead
        latest_allocations.percentage_allocation
            / nullif(sum(latest_allocations.percentage_allocation) over feature_split, 0)
            as expected_share,
        sum(coalesce(first_exposures_counted.identities, 0)) over feature_split as total,
        count(*) over feature_split as variant_count
    from latest_allocations
    left join first_exposures_counted
        on
            latest_allocations.environment_id = first_exposures_counted.environment_id
            and latest_allocations.feature_id = first_exposures_counted.feature_id
            and latest_allocations.variant = first_exposures_counted.variant
    window feature_split as (
        partition by latest_allocations.environment_id, latest_allocations.feature_id
    )
),

chi_square_computed as (
    select
        environment_id,
        feature_id,
        max(total) as identities,
        max(variant_count) - 1 as degrees_of_freedom,
        sum(
            power(observed - total * expected_share, 2) / nullif(total * expected_share, 0)
        ) as chi_square,
        min(total * expected_share) as smallest_expected
    from variants_compared
    group by environment_id, feature_id
),

critical_values as (
    select * from (
        values
        (1, 10.828), (2, 13.816), (3, 16.266), (4, 18.467), (5, 20.515),
        (6, 22.458), (7, 24.322), (8, 26.124), (9, 27.877), (10, 29.588)
    ) as critical (degrees_of_freedom, chi_square_p001)
),

mismatches_found as (
    select
        chi_square_computed.*,
        critical_values.chi_square_p001
    from chi_square_computed
    inner join critical_values
        on chi_square_computed.degrees_of_freedom = critical_values.degrees_of_freedom
    where
        chi_square_computed.identities >= 100
        and chi_square_computed.smallest_expected >= 5
        and chi_square_computed.chi_square > critical_values.chi_square_p001
)

select * from mismatches_found
