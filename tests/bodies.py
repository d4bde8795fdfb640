"""Building identity webhook bodies by hand, serialised exactly as Flagsmith does."""

from __future__ import annotations

import json

ENVIRONMENT = 7


def flag(
    feature_id,
    name,
    *,
    enabled=True,
    value=None,
    kind="STANDARD",
    identity=None,
    segment=None,
    allocation=None,
):
    state = {
        "enabled": enabled,
        "environment": ENVIRONMENT,
        "feature": {
            "created_date": "2026-11-01T10:00:00.000000Z",
            "default_enabled": False,
            "description": None,
            "id": feature_id,
            "initial_value": None,
            "name": name,
            "type": kind,
        },
        "feature_segment": segment,
        "feature_state_value": value,
        "id": 100 + feature_id,
        "identity": identity,
    }
    if allocation:
        state["percentage_allocation"] = allocation
    return state


def body(identity, flags, traits=(), segments=()):
    document = {
        "flags": flags,
        "identity": identity,
        "segments": list(segments),
        "traits": list(traits),
    }
    return json.dumps(document, sort_keys=True).encode()
