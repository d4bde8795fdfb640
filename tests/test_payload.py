from __future__ import annotations

import collections
import copy
import json
import random

import pytest

from loader.payload import classify, classify_reference
from loader.simulate import generate

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


# --- the fast path against the reference rules --------------------------------------------------

_REPLACEMENTS = [None, True, False, 0, -7, 1.5, 1e300, "", "x", "é", [], {}, [1], {"a": 1}]


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _mutated(document, rng: random.Random):
    """The document with one to three random edits: a value replaced, a key or item removed, an
    item duplicated, or a key added."""
    document = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        paths = [path for path in _paths(document) if path]
        path = rng.choice(paths)
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = rng.random()
        if action < 0.55:
            parent[last] = copy.deepcopy(rng.choice(_REPLACEMENTS))
        elif action < 0.75:
            del parent[last]
        elif action < 0.9 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif isinstance(parent, dict):
            parent[rng.choice(["event_type", "data", "extra", "member", "transient"])] = 1
    return document


@pytest.mark.parametrize("seed", range(4))
def test_fast_classification_agrees_with_the_reference_rules(seed):
    rng = random.Random(seed)
    bases = [json.loads(example[1]) for example in shared_examples()]
    bases += [json.loads(d.body) for d in generate(20, seed=seed, n_flags=6)]
    seen = collections.Counter()
    for _ in range(1500):
        document = _mutated(rng.choice(bases), rng)
        body = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()
        verdict = classify(body)
        assert verdict == classify_reference(body), body
        seen[verdict.reason or "identity"] += 1
    # the edits reach both verdicts and most reasons, so agreement is not agreement on one case
    assert seen["identity"] > 100
    assert len(seen) >= 8, seen


@pytest.mark.parametrize(
    "body",
    [
        b'{"identity": "a", "flags": [], "x": 123456789012345678901234567890}',
        b'{"identity": "a", "identity": 5}',
        b'{"identity": "a", "traits": [{"trait_key": "k", "trait_value": "\\ud800"}]}',
        b'{"identity": "a\\u0000b"}',
        b'{"identity": "a"} ',
        b'{"identity": "a"} x',
        b'\xef\xbb\xbf{"identity": "a"}',
        b'{"identity": "a", "flags": [{"enabled": true, "environment": 1.0,'
        b' "feature": {"id": 1, "name": "f"}}]}',
        b'{"identity": "a", "segments": [{"id": 1, "name": "s", "member": null}]}',
    ],
)
def test_fast_classification_agrees_on_edge_cases(body):
    assert classify(body) == classify_reference(body)
