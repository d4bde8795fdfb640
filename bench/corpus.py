"""Bench corpora shaped like production traffic, for bench/marts.py.

`production`: one environment, `identities` identities with `deliveries_per_identity` identify
calls each, at random times over `days` (so an identity's calls are spread over the stream); 50
flags, of which 1 in 7 multivariate with fixed buckets (an identity keeps its arm), about 20
environment-wide toggles that an operator flips a few times over the stream, the rest constant
(some with a segment override); 10 stored traits and 10 segments per identity; 2% of deliveries
carry a trait edit (which may move the identity between segments).

`worst`: the same shape, but every flag's value is drawn anew on every call, so most evaluations
start a new exposure period.

Bodies are serialised exactly as Flagsmith does (`json.dumps(..., sort_keys=True)`). The same
arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

START = datetime(2026, 3, 2, tzinfo=UTC)
ENVIRONMENT_ID = 10
ENVIRONMENT_KEY = "production"
PLANS = ("free", "starter", "pro", "enterprise")
COUNTRIES = ("NZ", "AU", "GB", "US", "DE", "FR", "JP", "BR", "IN", "CA")


@dataclass(frozen=True)
class CorpusDelivery:
    at: datetime
    environment_key: str
    body: bytes


def _bucket(*parts: object) -> float:
    """A stable percentage in [0, 100) for these ids (Flagsmith hashes ids the same way)."""
    digest = hashlib.md5(",".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF * 99.9999


def _feature(feature_id: int, name: str, kind: str, initial: object) -> dict:
    return {
        "created_date": "2026-01-15T09:30:00.000000Z",
        "default_enabled": True,
        "description": f"{name}: a flag of the bench corpus",
        "id": feature_id,
        "initial_value": None if initial is None else str(initial),
        "name": name,
        "type": kind,
    }


class _Corpus:
    def __init__(self, rng: random.Random, identities: int, days: float, worst: bool) -> None:
        self.rng = rng
        self.worst = worst
        self.span = timedelta(days=days)
        self.features: list[dict] = []
        self.multivariate: dict[int, list[tuple[object, float | None]]] = {}
        self.toggles: dict[int, list[datetime]] = {}  # feature -> times its state flips
        self.overrides: dict[int, int] = {}  # feature -> segment id whose members get "beta"
        for number in range(50):
            feature_id = 100 + number
            if number % 7 == 0:
                arms: list[tuple[object, float | None]] = [("control", None)]
                others = ["variant_a", "variant_b", "variant_c"][: 1 + number % 3]
                for other in others:
                    arms.append((other, round(50.0 / len(others), 2)))
                self.multivariate[feature_id] = arms
                self.features.append(
                    _feature(feature_id, f"experiment_{number}", "MULTIVARIATE", "control")
                )
            elif len(self.toggles) < 20:
                flips = sorted(START + self.span * rng.random() for _ in range(rng.randint(1, 3)))
                self.toggles[feature_id] = flips
                self.features.append(_feature(feature_id, f"toggle_{number}", "STANDARD", None))
            else:
                if number % 3 == 0:
                    self.overrides[feature_id] = 900 + number % 10
                self.features.append(
                    _feature(feature_id, f"setting_{number}", "STANDARD", number * 10)
                )
        self.feature_text = {f["id"]: json.dumps(f, sort_keys=True) for f in self.features}
        self.traits = {n: self._traits(n) for n in range(identities)}

    def _traits(self, identity: int) -> dict[str, object]:
        rng = random.Random(identity)
        return {
            "plan": rng.choice(PLANS),
            "country": rng.choice(COUNTRIES),
            "age": rng.randint(18, 80),
            "seats": rng.randint(1, 500),
            "beta_opt_in": rng.random() < 0.2,
            "score": round(rng.random() * 100, 2),
            "signup_source": rng.choice(("ads", "organic", "partner")),
            "locale": rng.choice(("en", "de", "fr", "ja")),
            "company": f"company_{rng.randrange(2000)}",
            "email_domain": rng.choice(("example.com", "example.org", "example.net")),
        }

    def _segments(self, traits: dict[str, object]) -> list[tuple[int, str, bool]]:
        plan, country = traits["plan"], traits["country"]
        seats, age = int(traits["seats"]), int(traits["age"])  # type: ignore[call-overload]
        return [
            (900, "paying", plan != "free"),
            (901, "enterprise", plan == "enterprise"),
            (902, "europe", country in ("GB", "DE", "FR")),
            (903, "beta_users", bool(traits["beta_opt_in"])),
            (904, "large_accounts", seats > 250),
            (905, "young", age < 30),
            (906, "organic", traits["signup_source"] == "organic"),
            (907, "german_speaking", traits["locale"] == "de"),
            (908, "high_score", float(traits["score"]) > 80),  # type: ignore[arg-type]
            (909, "apac", country in ("NZ", "AU", "JP", "IN")),
        ]

    def _edit_trait(self, identity: int) -> None:
        traits = self.traits[identity]
        key = self.rng.choice(("plan", "seats", "beta_opt_in", "country"))
        fresh = self._traits(self.rng.randrange(1 << 30))
        traits[key] = fresh[key]

    def body(self, identity: int, at: datetime) -> bytes:
        name = f"user_{identity:06d}"
        traits = self.traits[identity]
        segments = self._segments(traits)
        members = {segment_id for segment_id, _name, member in segments if member}
        flags = []
        for feature in self.features:
            feature_id = feature["id"]
            enabled, value, allocation, feature_segment = True, None, None, None
            if self.worst:
                enabled = self.rng.random() < 0.8
                value = self.rng.choice(("a", "b", "c", 1, 2, True, None))
            elif feature_id in self.multivariate:
                arms = self.multivariate[feature_id]
                point, start = _bucket(feature_id, identity), 0.0
                value, allocation = arms[0]
                for arm, share in arms[1:]:
                    if start <= point < start + share:  # type: ignore[operator]
                        value, allocation = arm, share
                        break
                    start += share  # type: ignore[operator]
            elif feature_id in self.toggles:
                enabled = sum(1 for flip in self.toggles[feature_id] if flip <= at) % 2 == 0
            else:
                value = int(feature["initial_value"])
                segment_id = self.overrides.get(feature_id)
                if segment_id in members:
                    value, feature_segment = "beta", 50_000 + feature_id
            flag = (
                '{"enabled": ' + ("true" if enabled else "false")
                + ', "environment": ' + str(ENVIRONMENT_ID)
                + ', "feature": ' + self.feature_text[feature_id]
                + ', "feature_segment": ' + json.dumps(feature_segment)
                + ', "feature_state_value": ' + json.dumps(value)
                + ', "id": ' + str(10_000 + feature_id)
                + ', "identity": null'
                + ("" if allocation is None else f', "percentage_allocation": {allocation!r}')
                + "}"
            )  # fmt: skip
            flags.append(flag)
        segment_list = [
            {"id": segment_id, "member": member, "name": segment_name}
            for segment_id, segment_name, member in segments
        ]
        trait_list = [
            {"id": 70_000 + identity * 10 + n, "trait_key": key, "trait_value": value,
             "transient": False}
            for n, (key, value) in enumerate(sorted(traits.items()))
        ]  # fmt: skip
        text = (
            '{"flags": [' + ", ".join(flags) + "], "
            + '"identity": ' + json.dumps(name) + ", "
            + '"segments": ' + json.dumps(segment_list, sort_keys=True) + ", "
            + '"traits": ' + json.dumps(trait_list, sort_keys=True) + "}"
        )  # fmt: skip
        return text.encode("ascii")


def iter_corpus(
    kind: str,
    *,
    identities: int = 20_000,
    deliveries_per_identity: int = 5,
    days: float = 14.0,
    seed: int = 0,
) -> Iterator[CorpusDelivery]:
    """The corpus's deliveries in order of receipt (strictly increasing times)."""
    if kind not in ("production", "worst"):
        raise ValueError(f"unknown corpus {kind!r}: production or worst")
    rng = random.Random(seed)
    corpus = _Corpus(rng, identities, days, worst=kind == "worst")
    seconds = days * 86_400
    calls = sorted(
        (rng.random() * seconds, identity)
        for identity in range(identities)
        for _ in range(deliveries_per_identity)
    )
    previous = None
    for offset, identity in calls:
        at = START + timedelta(seconds=offset)
        if previous is not None and at <= previous:
            at = previous + timedelta(microseconds=1)
        previous = at
        if rng.random() < 0.02:
            corpus._edit_trait(identity)
        yield CorpusDelivery(at, ENVIRONMENT_KEY, corpus.body(identity, at))
