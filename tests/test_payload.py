from __future__ import annotations

import json

import pytest

from loader.payload import classify

from .conftest import shared_examples


def _identity(**changes) -> bytes:
    document = {
        "identity": "user_1",
        "flags": [
            {
                "enabled": True,
                "environment": 1,
                "feature": {"id": 1, "name": "a", "type": "STANDARD"},
                "feature_segment": None,
                "feature_state_value": None,
                "id": 10,
                "identity": None,
            }
        ],
        "segments": [{"id": 3, "member": False, "name": "s"}],
        "traits": [{"id": None, "trait_key": "k", "trait_value": 1, "transient": False}],
    }
    document.update(changes)
    return json.dumps(document, sort_keys=True).encode()


@pytest.mark.parametrize("example", shared_examples(), ids=lambda e: e[0])
def test_real_flagsmith_bodies_are_identity_webhooks(example):
    assert classify(example[1]).is_identity


def test_empty_lists_are_fine():
    assert classify(_identity(flags=[], traits=[], segments=[])).is_identity


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not_json"),
        (b"not json", "not_json"),
        (b'{"identity": "a"', "not_json"),
        (b"\xff\xfe{}", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"identity"', "not_an_object"),
        (b'{"data": {"id": 1}, "event_type": "FLAG_UPDATED"}', "other_webhook_type"),
        (b'{"flags": []}', "missing_identity"),
        (b'{"identity": "", "flags": []}', "missing_identity"),
        (b'{"identity": 5, "flags": []}', "missing_identity"),
        (b'{"identity": "a", "flags": {}}', "invalid_shape"),
        (b'{"identity": "a", "segments": "x"}', "invalid_shape"),
    ],
)
def test_quarantines_what_the_marts_cannot_use(body, reason):
    verdict = classify(body)
    assert not verdict.is_identity
    assert verdict.reason == reason


def test_quarantines_a_flag_without_a_feature_id():
    flag = json.loads(_identity())["flags"][0]
    del flag["feature"]["id"]
    assert classify(_identity(flags=[flag])).reason == "invalid_flag"


def test_quarantines_an_object_as_flag_value():
    flag = json.loads(_identity())["flags"][0]
    flag["feature_state_value"] = {"nested": True}
    assert classify(_identity(flags=[flag])).reason == "invalid_flag"


def test_quarantines_a_feature_listed_twice():
    flag = json.loads(_identity())["flags"][0]
    assert classify(_identity(flags=[flag, flag])).reason == "duplicate_feature"


def test_quarantines_flags_of_two_environments():
    first = json.loads(_identity())["flags"][0]
    second = {**first, "environment": 2, "feature": {"id": 2, "name": "b", "type": "STANDARD"}}
    assert classify(_identity(flags=[first, second])).reason == "mixed_environments"


def test_a_transient_trait_may_share_a_stored_traits_key():
    traits = [
        {"id": 1, "trait_key": "k", "trait_value": 1, "transient": False},
        {"id": None, "trait_key": "k", "trait_value": None, "transient": True},
    ]
    assert classify(_identity(traits=traits)).is_identity


def test_quarantines_a_trait_listed_twice():
    trait = {"id": 1, "trait_key": "k", "trait_value": 1, "transient": False}
    assert classify(_identity(traits=[trait, trait])).reason == "duplicate_trait"


def test_quarantines_a_segment_without_an_id():
    assert classify(_identity(segments=[{"member": True, "name": "s"}])).reason == "invalid_segment"
