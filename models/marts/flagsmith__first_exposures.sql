{{ config(**flagsmith_warehouse.incremental_config(
    'flagsmith__flag_exposure_periods', ['environment_id', 'identity', 'feature_id']
)) }}

{#- Any evaluation is an exposure, including one served 'off'. Derived from the exposure periods,
    which already hold every evaluation of a pair in order: the first period's state is the first
    exposure, the latest period carries the latest name and evaluation, and the distinct variants
    of the periods are the variants ever served. A pair's periods start at distinct times and
    end at distinct times, so valid_from and last_evaluated_at alone order them. Incremental per
    pair whose periods changed. -#}

with

all_periods as (
    select * from {{ ref('flagsmith__flag_exposure_periods') }}
),

{% if flagsmith_warehouse.is_incremental_run() %}
pairs_with_new_periods as (
    {{ flagsmith_warehouse.new_input_keys_sql(
        ref('flagsmith__flag_exposure_periods'), ['environment_id', 'identity', 'feature_id']
    ) }}
),
{% endif %}

exposure_periods as (
    select all_periods.*
    from all_periods
    {% if flagsmith_warehouse.is_incremental_run() %}
    inner join pairs_with_new_periods as pairs
        on
            all_periods.environment_id = pairs.environment_id
            and all_periods.identity = pairs.identity
            and all_periods.feature_id = pairs.feature_id
    {% endif %}
),

exposures_summarized as (
    select
        environment_id,
        identity,
        feature_id,
        {{ flagsmith_warehouse.value_at_latest('feature_name', ['last_evaluated_at']) }}
            as feature_name,
        min(valid_from) as first_exposed_at,
        {{ flagsmith_warehouse.value_at_earliest('variant', ['valid_from']) }}
            as first_variant,
        {{ flagsmith_warehouse.value_at_earliest('enabled', ['valid_from']) }}
            as first_enabled,
        {{ flagsmith_warehouse.value_at_earliest('value', ['valid_from']) }}
            as first_value,
        {{ flagsmith_warehouse.value_at_earliest('assignment_source', ['valid_from']) }}
            as first_assignment_source,
        max(last_evaluated_at) as last_evaluated_at,
        count(distinct variant) as variant_count,
        max(transform_batch_at) as transform_batch_at
    from exposure_periods
    group by
        environment_id,
        identity,
        feature_id
),

multi_variant_flagged as (
    select
        environment_id,
        identity,
        feature_id,
        feature_name,
        first_exposed_at,
        first_variant,
        first_enabled,
        first_value,
        first_assignment_source,
        last_evaluated_at,
        variant_count,
        variant_count > 1 as is_multi_variant,
        transform_batch_at
    from exposures_summarized
)

select * from multi_variant_flagged
