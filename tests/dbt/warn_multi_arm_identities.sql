{{ config(severity='warn') }}

-- Experiment health: identities that saw more than one arm of an experiment (Flagsmith buckets an
-- identity by a stable hash, so the split itself moved while the test ran). They contaminate an
-- A/B comparison: leave out `is_multi_arm` identities. Checks the identities of the latest batch
-- (all with flagsmith__test_all_history).

{%- set model = ref('flagsmith__experiment_exposures') %}

select
    environment_id,
    feature_id,
    feature_name,
    identity,
    arm_count
from {{ model }}
where
    is_multi_arm
    {% if flagsmith_warehouse.test_recent_rows_only('transform_batch_at') %}
    and {{ flagsmith_warehouse.latest_batch_condition(model, 'transform_batch_at') }}
    {% endif %}
