{#- Identities that entered a segment and afterwards moved to another arm of an experiment: the
    arm they were in when they entered (the latest experiment period that started at or before
    then) and each later period in another arm. A segment override or a rule that moves people
    between arms as they qualify shows up here; such identities are multi-arm and are best left
    out of a readout. One row per segment entry and later arm change. -#}

with

segment_periods as (
    select * from {{ ref('flagsmith__segment_membership_periods') }}
),

assignments as (
    select * from {{ ref('flagsmith__experiment_assignments') }}
),

arm_at_entry as (
    select
        segment_periods.environment_id,
        segment_periods.identity,
        segment_periods.segment_id,
        segment_periods.segment_name,
        segment_periods.valid_from as entered_at,
        assignments.feature_id,
        assignments.experiment_name,
        assignments.variation_id as arm_at_entry,
        row_number() over (
            partition by
                segment_periods.environment_id,
                segment_periods.identity,
                segment_periods.segment_id,
                segment_periods.valid_from,
                assignments.feature_id
            order by assignments.{{ adapter.quote('timestamp') }} desc
        ) as recency
    from segment_periods
    inner join assignments
        on
            segment_periods.environment_id = assignments.environment_id
            and segment_periods.identity = assignments.identity
            and assignments.{{ adapter.quote('timestamp') }} <= segment_periods.valid_from
),

later_changes as (
    select
        arm_at_entry.environment_id,
        arm_at_entry.identity,
        arm_at_entry.segment_name,
        arm_at_entry.entered_at,
        arm_at_entry.experiment_name,
        arm_at_entry.arm_at_entry,
        assignments.variation_id as arm_after,
        assignments.{{ adapter.quote('timestamp') }} as changed_at
    from arm_at_entry
    inner join assignments
        on
            arm_at_entry.environment_id = assignments.environment_id
            and arm_at_entry.identity = assignments.identity
            and arm_at_entry.feature_id = assignments.feature_id
            and assignments.{{ adapter.quote('timestamp') }} > arm_at_entry.entered_at
            and assignments.variation_id != arm_at_entry.arm_at_entry
    where arm_at_entry.recency = 1
)

select * from later_changes
order by environment_id, identity, entered_at, experiment_name, changed_at
