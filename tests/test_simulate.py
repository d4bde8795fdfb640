"""The simulator must keep producing what Flagsmith really sends, and the edge cases the
warehouse tests rely on: these tests pin both."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import socket
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from loader.simulate import SimulatedWebhook, generate, iter_deliveries, post_all

from .conftest import shared_examples, sign

SECRET = b"s3cr3t"

# The real Flagsmith bodies and signatures (secret s3cr3t), from tests/fixtures/flagsmith.
REAL_BODIES: dict[str, tuple[bytes, str]] = {
    name: (body, signature) for name, body, signature in shared_examples()
}


def _key_sets(body: dict[str, Any]) -> dict[str, set[frozenset[str]]]:
    return {
        "top": {frozenset(body)},
        "flag": {frozenset(f) for f in body["flags"]},
        "feature": {frozenset(f["feature"]) for f in body["flags"]},
        "trait": {frozenset(t) for t in body["traits"]},
        "segment": {frozenset(s) for s in body["segments"]},
    }


def _merged(bodies: list[dict[str, Any]]) -> dict[str, set[frozenset[str]]]:
    merged: dict[str, set[frozenset[str]]] = {}
    for body in bodies:
        for part, shapes in _key_sets(body).items():
            merged.setdefault(part, set()).update(shapes)
    return merged


@pytest.fixture(scope="module")
def stream() -> list[SimulatedWebhook]:
    return generate(4000, seed=7, n_identities=25)


@pytest.fixture(scope="module")
def bodies(stream: list[SimulatedWebhook]) -> list[dict[str, Any]]:
    return [json.loads(d.body) for d in stream]


def _scope(body: dict[str, Any]) -> tuple[int | None, str]:
    flags = body["flags"]
    return (flags[0]["environment"] if flags else None, body["identity"])


def _stored(body: dict[str, Any]) -> dict[str, Any]:
    return {t["trait_key"]: t["trait_value"] for t in body["traits"] if not t["transient"]}


def _source(flag: dict[str, Any]) -> str:
    if flag["identity"] is not None:
        return "identity_override"
    return "segment_override" if flag["feature_segment"] is not None else "default"


@pytest.fixture(scope="module")
def changes(stream: list[SimulatedWebhook], bodies: list[dict[str, Any]]) -> Counter[str]:
    """How often each kind of change happens between consecutive deliveries of one identity."""
    counts: Counter[str] = Counter()
    previous: dict[tuple[int | None, str], tuple[bytes, dict[str, Any]]] = {}
    for delivery, body in zip(stream, bodies, strict=True):
        scope = _scope(body)
        if scope in previous:
            before_bytes, before = previous[scope]
            counts["repeated identical body"] += delivery.body == before_bytes
            flags_before = {f["feature"]["id"]: f for f in before["flags"]}
            for flag in body["flags"]:
                old = flags_before.get(flag["feature"]["id"])
                if old is None:
                    continue
                counts["toggle"] += old["enabled"] != flag["enabled"]
                if flag["feature"]["type"] == "MULTIVARIATE":
                    counts["variant change"] += (
                        old["feature_state_value"] != flag["feature_state_value"]
                    )
                old_source, new_source = _source(old), _source(flag)
                if old_source != new_source:
                    for source, verb in ((new_source, "applied"), (old_source, "removed")):
                        if source != "default":
                            counts[f"{source} {verb}"] += 1
            stored_before, stored_now = _stored(before), _stored(body)
            for key, value in stored_now.items():
                if key not in stored_before:
                    counts["trait added"] += 1
                elif stored_before[key] != value or type(stored_before[key]) is not type(value):
                    counts["trait changed"] += 1
                    if type(stored_before[key]) is not type(value):
                        counts["trait type changed"] += 1
            counts["trait deleted"] += len(set(stored_before) - set(stored_now))
            members_before = {s["id"]: s["member"] for s in before["segments"]}
            for segment in body["segments"]:
                if members_before.get(segment["id"]) is True and not segment["member"]:
                    counts["segment left"] += 1
                if members_before.get(segment["id"]) is False and segment["member"]:
                    counts["segment joined"] += 1
        previous[scope] = (delivery.body, body)
        for trait in body["traits"]:
            counts["transient trait"] += trait["transient"]
            counts["transient null"] += trait["transient"] and trait["trait_value"] is None
        for flag in body["flags"]:
            counts[f"source {_source(flag)}"] += 1
    return counts


def test_real_examples_are_flagsmith_serialisation() -> None:
    for body, signature in REAL_BODIES.values():
        assert json.dumps(json.loads(body), sort_keys=True).encode() == body
        assert sign(body, SECRET) == signature


def test_same_seed_same_bytes() -> None:
    first = generate(300, seed=3, n_flags=12, n_environments=2)
    second = generate(300, seed=3, n_flags=12, n_environments=2)
    assert first == second


def test_other_seed_other_stream() -> None:
    assert generate(50, seed=1) != generate(50, seed=2)


def test_iterator_and_list_agree() -> None:
    assert list(iter_deliveries(100, seed=5)) == generate(100, seed=5)


def test_bodies_are_flagsmith_serialisation(stream: list[SimulatedWebhook]) -> None:
    for delivery in stream:
        assert json.dumps(json.loads(delivery.body), sort_keys=True).encode() == delivery.body
        assert delivery.body.isascii()


def test_non_ascii_values_are_escaped(stream: list[SimulatedWebhook]) -> None:
    assert any(b"\\u00eb" in d.body or b"\\ud83d" in d.body for d in stream)


def test_signatures_verify(stream: list[SimulatedWebhook]) -> None:
    for delivery in stream:
        expected = hmac.new(SECRET, delivery.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(delivery.signature, expected)


def test_custom_secret_signs() -> None:
    (delivery,) = generate(1, secret=b"other")
    assert delivery.signature == sign(delivery.body, b"other") != sign(delivery.body, SECRET)


def test_times_are_utc_strictly_increasing_and_cross_midnight(
    stream: list[SimulatedWebhook],
) -> None:
    times = [d.at for d in stream]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in times)
    assert all(a < b for a, b in itertools.pairwise(times))
    assert len({t.date() for t in times}) >= 2


def test_start_is_respected() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    deliveries = generate(10, start=start)
    assert start < deliveries[0].at < start + timedelta(hours=1)


def test_shapes_match_the_real_examples(bodies: list[dict[str, Any]]) -> None:
    real = _merged([json.loads(body) for body, _ in REAL_BODIES.values()])
    generated = _merged(bodies)
    for part, shapes in generated.items():
        assert shapes <= real[part], part
    # Both flag shapes appear: with and without "percentage_allocation".
    assert generated["flag"] == real["flag"]


def test_percentage_allocation_only_when_truthy_or_a_null_for_standard(
    bodies: list[dict[str, Any]],
) -> None:
    seen: Counter[str] = Counter()
    for body in bodies:
        for flag in body["flags"]:
            if "percentage_allocation" not in flag:
                seen["absent"] += 1
            elif flag["percentage_allocation"] is None:
                assert flag["feature"]["type"] == "STANDARD"
                seen["null"] += 1
            else:
                assert isinstance(flag["percentage_allocation"], float)
                assert 0 < flag["percentage_allocation"] <= 100
                assert flag["feature"]["type"] == "MULTIVARIATE"
                seen["value"] += 1
    assert min(seen["absent"], seen["null"], seen["value"]) > 100


def test_field_types(bodies: list[dict[str, Any]]) -> None:
    value_types: Counter[str] = Counter()
    trait_types: Counter[str] = Counter()
    for body in bodies:
        assert isinstance(body["identity"], str)
        for flag in body["flags"]:
            feature = flag["feature"]
            assert feature["type"] in ("STANDARD", "MULTIVARIATE")
            assert feature["description"] is None or isinstance(feature["description"], str)
            assert feature["initial_value"] is None or isinstance(feature["initial_value"], str)
            datetime.strptime(feature["created_date"], "%Y-%m-%dT%H:%M:%S.%fZ")
            assert isinstance(flag["environment"], int)
            assert isinstance(flag["id"], int)
            value_types[type(flag["feature_state_value"]).__name__] += 1
        for trait in body["traits"]:
            assert trait["id"] is None or isinstance(trait["id"], int)
            assert trait["trait_value"] is not None or trait["transient"]
            if not trait["transient"]:
                trait_types[type(trait["trait_value"]).__name__] += 1
        assert [s["id"] for s in body["segments"]] == sorted(s["id"] for s in body["segments"])
    assert set(value_types) == {"str", "int", "float", "bool", "NoneType"}
    assert set(trait_types) == {"str", "int", "float", "bool"}


def test_feature_segment_is_not_a_segment_id(bodies: list[dict[str, Any]]) -> None:
    segment_ids = {s["id"] for body in bodies for s in body["segments"]}
    feature_segments = {
        f["feature_segment"] for body in bodies for f in body["flags"] if f["feature_segment"]
    }
    assert feature_segments
    assert not feature_segments & segment_ids


def test_identity_override_carries_the_identity_id(bodies: list[dict[str, Any]]) -> None:
    ids_per_identity: dict[tuple[int | None, str], set[int]] = {}
    for body in bodies:
        for flag in body["flags"]:
            if flag["identity"] is not None:
                ids_per_identity.setdefault(_scope(body), set()).add(flag["identity"])
    assert ids_per_identity
    assert all(len(ids) == 1 for ids in ids_per_identity.values())
    assert len({i for ids in ids_per_identity.values() for i in ids}) == len(ids_per_identity)


def test_membership_follows_stored_traits(bodies: list[dict[str, Any]]) -> None:
    for body in bodies:
        member = {s["name"]: s["member"] for s in body["segments"]}
        stored = _stored(body)
        assert member["beta_users"] == (stored.get("plan") == "beta")
        assert member["premium"] == (stored.get("is_premium") is True)


def test_every_segment_is_listed(bodies: list[dict[str, Any]]) -> None:
    assert len({tuple(s["id"] for s in body["segments"]) for body in bodies}) == 1


def test_multivariate_bucketing_is_stable(bodies: list[dict[str, Any]]) -> None:
    """The variant of an identity only moves when allocations move, which is rare."""
    evaluations = moves = 0
    last: dict[tuple[Any, ...], Any] = {}
    for body in bodies:
        for flag in body["flags"]:
            if flag["feature"]["type"] != "MULTIVARIATE" or _source(flag) != "default":
                continue
            key = (*_scope(body), flag["feature"]["id"])
            evaluations += 1
            moves += key in last and last[key] != flag["feature_state_value"]
            last[key] = flag["feature_state_value"]
    assert 0 < moves < evaluations / 20


@pytest.mark.parametrize(
    ("kind", "at_least"),
    [
        ("toggle", 50),
        ("variant change", 5),
        ("identity_override applied", 5),
        ("identity_override removed", 3),
        ("segment_override applied", 20),
        ("segment_override removed", 20),
        ("trait changed", 100),
        ("trait type changed", 3),
        ("trait deleted", 50),
        ("trait added", 50),
        ("transient trait", 300),
        ("transient null", 30),
        ("segment joined", 50),
        ("segment left", 50),
        ("repeated identical body", 300),
    ],
)
def test_stream_keeps_producing_edge_cases(changes: Counter[str], kind: str, at_least: int) -> None:
    assert changes[kind] >= at_least, changes


def test_fifty_flags_make_the_benchmark_body_size() -> None:
    deliveries = generate(1000, seed=1, n_flags=50)
    mean = sum(len(d.body) for d in deliveries) / len(deliveries)
    assert 13_000 < mean < 20_000
    assert max(len(json.loads(d.body)["flags"]) for d in deliveries) == 50


def test_a_flag_created_during_the_stream_is_missing_before() -> None:
    counts = Counter(len(json.loads(d.body)["flags"]) for d in generate(1000, seed=2))
    assert set(counts) == {7, 8}


def test_hidden_disabled_flags_are_left_out() -> None:
    bodies = [json.loads(d.body) for d in generate(1000, seed=2, hide_disabled_flags=True)]
    assert all(f["enabled"] for body in bodies for f in body["flags"])
    assert len({len(body["flags"]) for body in bodies}) > 2


def test_environments_scope_identities() -> None:
    deliveries = generate(1000, seed=4, n_identities=20, n_environments=2)
    by_key: dict[str | None, set[int]] = {}
    identities: dict[str, set[int]] = {}
    for delivery in deliveries:
        body = json.loads(delivery.body)
        environment = body["flags"][0]["environment"]
        by_key.setdefault(delivery.environment_key, set()).add(environment)
        identities.setdefault(body["identity"], set()).add(environment)
    assert by_key == {"production": {10}, "staging": {11}}
    assert any(len(envs) == 2 for envs in identities.values())  # user_1 lives in both


def test_unkeyed_stream_has_no_environment_key() -> None:
    assert {d.environment_key for d in generate(20, keyed=False)} == {None}


# --- post_all -----------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn answers
    received: ClassVar[list[tuple[str, dict[str, str], bytes, int]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.received.append((self.path, dict(self.headers), body, self.client_address[1]))
            delivery_id = f"d{len(self.received)}"
        if self.headers.get("X-Flagsmith-Signature") != sign(body, SECRET):
            answer, status = b'{"error": "bad signature"}', 401
        else:
            answer, status = json.dumps({"delivery_id": delivery_id}).encode(), 202
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver():
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.received
    server.shutdown()
    server.server_close()


def test_post_all_sends_signed_bodies_to_the_environment_url(receiver) -> None:
    base_url, received = receiver
    deliveries = generate(60, seed=1, n_environments=2)
    results = post_all(base_url, deliveries, concurrency=3)
    assert [status for status, _ in results] == [202] * 60
    assert len({delivery_id for _, delivery_id in results}) == 60
    sent = {body: (path, headers) for path, headers, body, _ in received}
    for delivery in deliveries:
        path, headers = sent[delivery.body]
        assert path == f"/webhooks/flagsmith/{delivery.environment_key}"
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Flagsmith-Signature"] == delivery.signature


def test_post_all_keeps_connections_alive(receiver) -> None:
    base_url, received = receiver
    post_all(base_url, generate(60, seed=1), concurrency=3)
    assert len({port for *_, port in received}) <= 3


def test_post_all_without_key_and_with_a_prefix(receiver) -> None:
    base_url, received = receiver
    post_all(base_url + "/hooks/", generate(2, keyed=False), concurrency=1)
    assert {path for path, *_ in received} == {"/hooks/webhooks/flagsmith"}


def test_post_all_reports_rejections(receiver) -> None:
    base_url, _ = receiver
    good, bad = generate(2)
    forged = SimulatedWebhook(bad.body, "0" * 64, bad.environment_key, bad.at)
    assert post_all(base_url, [good, forged], concurrency=1) == [(202, "d1"), (401, None)]


def test_post_all_transport_failure_is_status_zero() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert post_all(f"http://127.0.0.1:{port}", generate(1), timeout=1) == [(0, None)]
