from __future__ import annotations

import json
import os

import pytest

from loader.spool import iter_all_deliveries

from .conftest import SECRET, post, shared_examples, sign

EXAMPLES = shared_examples()


def _stored(settings):
    return list(iter_all_deliveries(settings.spool_dir))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e[0])
def test_real_delivery_is_stored_exactly_and_answered_202(client, settings, example):
    _, body, signature = example
    answer = post(client, body, signature, path="/webhooks/flagsmith/production")
    assert answer.status_code == 202
    assert answer.json["status"] == "accepted"
    [stored] = _stored(settings)
    assert stored.delivery_id == answer.json["delivery_id"]
    assert stored.body == body
    assert stored.environment_key == "production"
    assert stored.signature_status == "verified"
    assert stored.kind == "identity"
    assert stored.secret_fingerprint and SECRET.decode() not in json.dumps(
        stored.secret_fingerprint
    )
    assert stored.received_at.tzinfo is not None


def test_environment_key_is_optional(client, settings):
    _, body, signature = EXAMPLES[0]
    assert post(client, body, signature).status_code == 202
    assert _stored(settings)[0].environment_key is None


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        (sign(b"other body"), "invalid_signature"),
        ("sha256=" + "0" * 64, "malformed_signature"),
    ],
)
def test_refuses_unproven_bodies_and_stores_nothing(client, settings, signature, reason):
    _, body, _ = EXAMPLES[0]
    answer = post(client, body, signature)
    assert answer.status_code == 401
    assert answer.json == {"error": reason}
    assert _stored(settings) == []


def test_wrong_secret_is_refused(client, settings):
    _, body, _ = EXAMPLES[0]
    assert post(client, body, sign(body, b"guess")).status_code == 401
    assert _stored(settings) == []


def test_identical_bodies_are_separate_deliveries(client, settings):
    _, body, signature = EXAMPLES[0]
    first = post(client, body, signature).json["delivery_id"]
    second = post(client, body, signature).json["delivery_id"]
    assert first != second
    assert len(_stored(settings)) == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not_json"),
        (b"[]", "not_an_object"),
        (b'{"data": {}, "event_type": "FLAG_UPDATED"}', "other_webhook_type"),
        (b"", "not_json"),
    ],
)
def test_authentic_unusable_bodies_are_quarantined_not_dropped(client, settings, body, reason):
    answer = post(client, body, sign(body))
    assert answer.status_code == 202
    assert answer.json["status"] == "quarantined" and answer.json["reason"] == reason
    [stored] = _stored(settings)
    assert stored.kind == "quarantine" and stored.reason == reason and stored.body == body


def test_body_over_the_limit_is_413(app, client, settings):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    body = b'{"identity": "' + b"x" * 2000 + b'"}'
    assert post(client, body, sign(body)).status_code == 413
    assert _stored(settings) == []


def test_a_body_shorter_than_its_content_length_is_400_and_not_stored(client, settings):
    _, body, signature = EXAMPLES[0]
    answer = client.post(
        "/webhooks/flagsmith",
        data=body,
        headers={"X-Flagsmith-Signature": signature, "Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": str(len(body) + 10)},
    )
    assert answer.status_code == 400
    assert _stored(settings) == []


def test_unwritable_spool_answers_503_never_2xx(client, settings, monkeypatch):
    _, body, signature = EXAMPLES[0]

    def full_disk(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)
    answer = post(client, body, signature)
    assert answer.status_code == 503
    assert answer.json == {"error": "spool_unwritable"}


def test_read_only_spool_answers_503_never_2xx(client, settings, read_only_filesystem):
    _, body, signature = EXAMPLES[0]
    answer = post(client, body, signature)
    assert answer.status_code == 503
    assert answer.json == {"error": "spool_unwritable"}
    assert _stored(settings) == []


def test_get_on_the_webhook_is_405_and_unknown_path_404(client):
    assert client.get("/webhooks/flagsmith").status_code == 405
    assert client.post("/webhooks/other", data=b"{}").status_code == 404


def test_environment_key_with_odd_characters_is_404(client, settings):
    _, body, signature = EXAMPLES[0]
    assert post(client, body, signature, path="/webhooks/flagsmith/a%20b").status_code == 404
    assert _stored(settings) == []


def test_health_endpoints(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_readyz_fails_while_the_spool_is_unwritable_and_livez_stays_up(
    client, read_only_filesystem
):
    assert client.get("/readyz").status_code == 503
    assert client.get("/livez").status_code == 200
