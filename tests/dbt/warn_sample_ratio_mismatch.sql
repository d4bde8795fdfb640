{{ config(severity='warn') }}

-- Experiment health: experiments whose identities' first arms are implausible under the split
-- Flagsmith reports (sample-ratio mismatch, p < 0.001; flagsmith__experiments computes it). The
-- assignment or the logging is broken, or the split was ramped while the test ran: an A/B
-- readout on them is not to be trusted as it stands.

select
    environment_id,
    feature_id,
    feature_name,
    identities_exposed,
    arm_count,
    srm_chi_square,
    srm_p_value
from {{ ref('flagsmith__experiments') }}
where srm_p_value < 0.001
