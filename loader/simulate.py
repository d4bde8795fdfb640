"""Realistic Flagsmith identity-webhook traffic, for the demo, the tests and the benchmarks.

Why a simulator: the marts are about change over time (toggles, rollouts, overrides, traits and
segment membership moving), and a handful of captured bodies cannot show that. This module plays
a small Flagsmith project forward in simulated time, deterministically from a seed, and renders
each identify call as the exact bytes Flagsmith would post: ``json.dumps(data, sort_keys=True)``
(default separators, ``ensure_ascii=True``) signed with HMAC-SHA256. The shape follows the real
bodies in the shared ``flagsmith/`` examples; ``post_all`` sends them over HTTP with only the
standard library, so the demo needs nothing beyond the project's own dependencies.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from .signature import sign

__all__ = ["SimulatedWebhook", "demo_timeline", "generate", "iter_deliveries", "post_all"]

DEFAULT_START = datetime(2026, 3, 1, 21, 0, tzinfo=UTC)
"""Late evening, so that even a short stream crosses a UTC day boundary."""

ENVIRONMENT_KEYS = ("production", "staging", "development")


@dataclass(frozen=True)
class SimulatedWebhook:
    """One webhook as it leaves Flagsmith: the signed bytes, the URL label and when it arrives.

    ``at`` is the simulated receipt time (UTC); a real receiver stamps its own clock, tests that
    bypass HTTP use ``at`` as ``received_at``.
    """

    body: bytes
    signature: str
    environment_key: str | None
    at: datetime


def hashed_percentage(*object_ids: int) -> float:
    """Flagsmith's stable bucketing: md5 of the comma-joined ids, scaled to [0, 100).

    Used for multivariate variants (feature state id, identity id) and percentage-split
    segments (segment id, identity id), so an identity keeps its bucket while allocations move.
    """
    digest = hashlib.md5(",".join(map(str, object_ids)).encode(), usedforsecurity=False)
    return (int(digest.hexdigest(), 16) % 9999) / 9998 * 100


# --- the project model --------------------------------------------------------------------------


@dataclass
class _Variant:
    id: int
    value: Any
    allocation: float


@dataclass
class _FeatureState:
    """An environment default, a segment override or an identity override."""

    id: int
    enabled: bool
    value: Any
    variants: list[_Variant] = field(default_factory=list)
    # Some feature states serialise "percentage_allocation": null instead of omitting it.
    null_allocation: bool = False


@dataclass
class _ProjectFeature:
    id: int
    name: str
    kind: str  # toggle | string | integer | float | boolean | multivariate
    payload: dict[str, Any]  # the "feature" object of a flag
    launched_at: datetime | None = None  # created during the stream: absent before

    @property
    def is_multivariate(self) -> bool:
        return self.kind == "multivariate"


@dataclass
class _ProjectSegment:
    id: int
    name: str
    trait_key: str | None  # None: a percentage split on the identity
    operator: str  # EQUAL | GREATER_THAN_INCLUSIVE | PERCENTAGE_SPLIT
    operand: Any

    def matches(self, identity: _Identity) -> bool:
        """Membership from stored traits only (transient traits never reach here)."""
        if self.operator == "PERCENTAGE_SPLIT":
            return hashed_percentage(self.id, identity.id) < self.operand
        stored = identity.traits.get(self.trait_key or "")
        if stored is None:
            return False
        if self.operator == "EQUAL":
            return stored.value == self.operand and type(stored.value) is type(self.operand)
        try:  # GREATER_THAN_INCLUSIVE: numbers, or numeric strings an SDK sent as text
            return float(stored.value) >= self.operand
        except (TypeError, ValueError):
            return False


@dataclass
class _FeatureSegment:
    id: int  # what flags carry as "feature_segment": not the segment id
    segment: _ProjectSegment
    state: _FeatureState


@dataclass
class _StoredTrait:
    id: int
    value: Any


@dataclass
class _Identity:
    id: int
    identifier: str
    environment: _Environment
    weight: float
    anonymous: bool
    traits: dict[str, _StoredTrait] = field(default_factory=dict)


@dataclass
class _Environment:
    id: int
    key: str | None
    hide_disabled_flags: bool
    defaults: dict[int, _FeatureState] = field(default_factory=dict)
    segment_overrides: dict[int, list[_FeatureSegment]] = field(default_factory=dict)
    identity_overrides: dict[tuple[int, int], _FeatureState] = field(default_factory=dict)
    identities: list[_Identity] = field(default_factory=list)


# Values an operator or an SDK might plausibly set. Non-ASCII names exercise ensure_ascii.
_COUNTRIES = ("DE", "FR", "GB", "US", "ES", "NL", "BR", "JP")
_PLANS = ("free", "beta", "pro", "enterprise")
_NICKNAMES = ("Zoë", "Ana", "José", "Björn", "李雷", "Chloé", "Max", "Ola 🚀", "sam")
_BANNERS = ("Welcome", "Welcome back!", "Spring sale: 20% off", "New: dark mode", "Hello")
_WORDS_A = ("new", "beta", "fast", "smart", "legacy", "mobile", "web", "quick", "bulk", "live")
_WORDS_B = (
    "search",
    "checkout",
    "export",
    "billing",
    "onboarding",
    "sidebar",
    "reports",
    "chat",
    "upload",
    "pricing",
    "invites",
    "alerts",
)
_DESCRIPTIONS = (
    "Gate for the redesigned flow; remove after full rollout",
    "Ops kill switch",
    "Requested by the growth team",
    "Copy test for the landing page",
)
_TRAIT_KEYS = ("age", "score", "is_premium", "country", "plan", "nickname")


def _trait_value(rng: random.Random, key: str, current: Any = None) -> Any:
    """A new stored value for a trait, usually a plausible change of the current one."""
    if key == "age":
        if isinstance(current, int) and rng.random() < 0.7:
            return current + 1  # a birthday
        if isinstance(current, int) and rng.random() < 0.3:
            return str(current)  # an SDK sending the number as text: a new type, same text
        return rng.randint(15, 70)
    if key == "score":
        return round(rng.uniform(0, 100), 1)
    if key == "is_premium":
        return not current if isinstance(current, bool) else rng.random() < 0.3
    if key == "country":
        return rng.choice(_COUNTRIES)
    if key == "plan":
        return rng.choice(_PLANS)
    return rng.choice(_NICKNAMES)


def _transient_traits(rng: random.Random) -> list[dict[str, Any]]:
    """Per-request traits: sent with the identify call, never stored, value may be null."""
    traits: list[tuple[str, str | None]] = []
    if rng.random() < 0.8:
        traits.append(("session_id", f"{rng.getrandbits(48):012x}"))
    if rng.random() < 0.4:
        traits.append(("session_coupon", rng.choice((None, None, "SPRING10"))))
    if rng.random() < 0.3:
        traits.append(("device", rng.choice(("ios", "android", "web"))))
    return [{"id": None, "trait_key": k, "trait_value": v, "transient": True} for k, v in traits]


class _Project:
    """A Flagsmith project: its features, segments and environments, and how they evolve."""

    def __init__(
        self,
        rng: random.Random,
        *,
        start: datetime,
        n_identities: int,
        n_flags: int,
        n_environments: int,
        hide_disabled_flags: bool,
        keyed: bool,
    ) -> None:
        self.rng = rng
        self._ids: dict[str, int] = {
            "environment": 10,
            "feature": 16,
            "feature_state": 25,
            "segment": 10,
            "feature_segment": 4,
            "identity": 11,
            "trait": 19,
            "variant": 3,
        }
        self.segments = self._make_segments()
        self.features = self._make_features(n_flags, start)
        self.environments = [
            self._make_environment(i, hide_disabled_flags, keyed) for i in range(n_environments)
        ]
        for i in range(n_identities):
            self._make_identity(self.environments[i % n_environments])
        self.identities = [x for env in self.environments for x in env.identities]
        self._flag_cache: dict[tuple[Any, ...], str] = {}

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind] - 1

    # construction

    def _make_segments(self) -> list[_ProjectSegment]:
        specs = [
            ("beta_users", "plan", "EQUAL", "beta"),
            ("enterprise", "plan", "EQUAL", "enterprise"),
            ("adults", "age", "GREATER_THAN_INCLUSIVE", 18),
            ("premium", "is_premium", "EQUAL", True),
            ("germany", "country", "EQUAL", "DE"),
            ("power_users", "score", "GREATER_THAN_INCLUSIVE", 80),
            ("gradual_rollout", None, "PERCENTAGE_SPLIT", 10.0),
        ]
        return [_ProjectSegment(self._next("segment"), *spec) for spec in specs]

    def segment(self, name: str) -> _ProjectSegment:
        return next(s for s in self.segments if s.name == name)

    def _make_features(self, n_flags: int, start: datetime) -> list[_ProjectFeature]:
        rng = self.rng
        templates: list[tuple[str, str, Any, str | None]] = [
            ("dark_mode", "toggle", None, None),
            ("checkout_button", "multivariate", "control", "Checkout button copy experiment"),
            ("banner_text", "string", "Welcome", None),
            ("max_items", "integer", 10, None),
            ("new_checkout_flow", "toggle", None, _DESCRIPTIONS[0]),
            ("price_multiplier", "float", 1.0, None),
            ("show_promo", "boolean", False, None),
            ("onboarding_steps", "multivariate", 3, "How many onboarding steps to show"),
        ]
        names = {t[0] for t in templates}
        while len(templates) < n_flags:
            name = f"{rng.choice(_WORDS_A)}_{rng.choice(_WORDS_B)}"
            if name in names:
                name = f"{name}_{len(templates)}"
            names.add(name)
            kind = rng.choices(
                ("toggle", "string", "integer", "float", "boolean", "multivariate"),
                weights=(40, 20, 15, 10, 5, 10),
            )[0]
            initial = {
                "toggle": None,
                "string": rng.choice(_BANNERS),
                "integer": rng.randint(1, 100),
                "float": round(rng.uniform(0, 5), 2),
                "boolean": rng.random() < 0.5,
                "multivariate": "control",
            }[kind]
            description = rng.choice(_DESCRIPTIONS) if rng.random() < 0.4 else None
            templates.append((name, kind, initial, description))

        created = start - timedelta(days=rng.randint(20, 400))
        features = []
        for name, kind, initial, description in templates[:n_flags]:
            created += timedelta(seconds=rng.uniform(0.01, 86_400), microseconds=1)
            if initial is None or isinstance(initial, str):
                initial_value = initial
            elif isinstance(initial, bool):
                initial_value = "true" if initial else "false"
            else:
                initial_value = json.dumps(initial)
            feature_id = self._next("feature")
            features.append(
                _ProjectFeature(
                    id=feature_id,
                    name=name,
                    kind=kind,
                    payload={
                        "created_date": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "default_enabled": kind != "toggle" or rng.random() < 0.3,
                        "description": description,
                        "id": feature_id,
                        "initial_value": initial_value,
                        "name": name,
                        "type": "MULTIVARIATE" if kind == "multivariate" else "STANDARD",
                    },
                )
            )
        if len(features) >= 4:  # the newest flag is created while traffic flows
            newest = features[-1]
            newest.launched_at = start + timedelta(hours=rng.uniform(1, 6))
            newest.payload["created_date"] = newest.launched_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return features

    def _initial_value(self, feature: _ProjectFeature) -> Any:
        initial = feature.payload["initial_value"]
        if feature.kind in ("integer", "float") or (
            feature.kind == "multivariate" and initial not in (None, "control")
        ):
            return json.loads(initial)
        if feature.kind == "boolean":
            return initial == "true"
        return initial

    def _variants(self, feature: _ProjectFeature) -> list[_Variant]:
        if feature.name == "onboarding_steps":
            values: list[Any] = [4, 5]
        else:
            values = ["variant_a", "variant_b"][: self.rng.randint(1, 2)]
        allocation = self.rng.choice((10.0, 12.5, 20.0, 25.0, 33.3, 50.0)) / len(values)
        return [_Variant(self._next("variant"), v, round(allocation, 2)) for v in values]

    def _make_environment(self, index: int, hide: bool, keyed: bool) -> _Environment:
        rng = self.rng
        key = None
        if keyed:
            key = ENVIRONMENT_KEYS[index] if index < len(ENVIRONMENT_KEYS) else f"env-{index}"
        env = _Environment(id=self._next("environment"), key=key, hide_disabled_flags=hide)
        for feature in self.features:
            enabled = feature.payload["default_enabled"]
            if index > 0 and rng.random() < 0.3:  # environments drift apart
                enabled = not enabled
            env.defaults[feature.id] = _FeatureState(
                id=self._next("feature_state"),
                enabled=enabled,
                value=self._initial_value(feature),
                variants=self._variants(feature) if feature.is_multivariate else [],
                null_allocation=rng.random() < 0.35,
            )
        overrides = {
            "banner_text": ("beta_users", True, "Welcome, beta tester"),
            "new_checkout_flow": ("gradual_rollout", True, None),
            "max_items": ("premium", True, 100),
            "dark_mode": ("germany", True, None),
        }
        trait_segments = [s for s in self.segments if s.trait_key is not None]
        for feature in self.features:
            if feature.name in overrides:
                segment_name, enabled, value = overrides[feature.name]
                segment = self.segment(segment_name)
            elif not feature.is_multivariate and rng.random() < 0.2:
                segment, enabled = rng.choice(trait_segments), rng.random() < 0.7
                value = self._operator_value(feature, env.defaults[feature.id].value)
            else:
                continue
            state = _FeatureState(
                id=self._next("feature_state"),
                enabled=enabled,
                value=value,
                null_allocation=rng.random() < 0.5,
            )
            env.segment_overrides[feature.id] = [
                _FeatureSegment(self._next("feature_segment"), segment, state)
            ]
        return env

    def _make_identity(self, env: _Environment) -> None:
        rng = self.rng
        anonymous = rng.random() < 0.15
        if anonymous:
            identifier = f"anon_{rng.getrandbits(32):08x}"
        else:
            identifier = f"user_{len(env.identities) + 1}"
        identity = _Identity(
            id=self._next("identity"),
            identifier=identifier,
            environment=env,
            weight=rng.paretovariate(1.2),
            anonymous=anonymous,
        )
        if not anonymous:
            for key in _TRAIT_KEYS:
                if rng.random() < 0.8:
                    identity.traits[key] = _StoredTrait(self._next("trait"), _trait_value(rng, key))
        env.identities.append(identity)

    # the operator, at random points in simulated time

    def _operator_value(self, feature: _ProjectFeature, current: Any) -> Any:
        rng = self.rng
        if feature.kind == "string":
            return rng.choice([b for b in _BANNERS if b != current])
        if feature.kind == "integer":
            return rng.choice((5, 10, 20, 25, 50, 100))
        if feature.kind == "float":
            return rng.choice((0.5, 0.9, 1.0, 1.25, 1.5, 97.5))
        if feature.kind == "boolean":
            # Flagsmith can serve boolean false and string "false" for one feature.
            return rng.choice((True, False, "true", "false"))
        if feature.kind == "multivariate":
            return current
        return None

    def operate(self, now: datetime) -> None:
        """One change by a human in the Flagsmith dashboard."""
        rng = self.rng
        env = rng.choice(self.environments)
        features = [f for f in self.features if f.launched_at is None or f.launched_at <= now]
        action = rng.choices(
            (
                "toggle",
                "value",
                "experiment",
                "rollout",
                "override",
                "unoverride",
                "segment_override",
            ),
            weights=(30, 14, 10, 10, 18, 12, 6),
        )[0]
        if action == "toggle":
            state = env.defaults[rng.choice(features).id]
            state.enabled = not state.enabled
        elif action == "value":
            candidates = [f for f in features if f.kind not in ("toggle", "multivariate")]
            if candidates:
                feature = rng.choice(candidates)
                state = env.defaults[feature.id]
                state.value = self._operator_value(feature, state.value)
        elif action == "experiment":
            self._advance_experiment(env, [f for f in features if f.is_multivariate])
        elif action == "rollout":
            rollout = self.segment("gradual_rollout")
            if rollout.operand >= 100:
                rollout.operand = 5.0  # rolled back after an incident, then restarted
            else:
                rollout.operand = min(100.0, rollout.operand + rng.choice((5.0, 10.0, 20.0)))
        elif action == "override" and env.identities:
            # Operators override the users they hear from: the active ones.
            identity = rng.choices(env.identities, [i.weight for i in env.identities])[0]
            feature = rng.choice(features)
            default = env.defaults[feature.id]
            if feature.is_multivariate:
                value = rng.choice([v.value for v in default.variants] + [default.value])
            else:
                value = self._operator_value(feature, default.value)
            env.identity_overrides[(identity.id, feature.id)] = _FeatureState(
                id=self._next("feature_state"),
                enabled=rng.random() < 0.75,
                value=value,
                null_allocation=rng.random() < 0.5,
            )
        elif action == "unoverride" and env.identity_overrides:
            del env.identity_overrides[rng.choice(sorted(env.identity_overrides))]
        elif action == "segment_override" and env.segment_overrides:
            feature_id = rng.choice(sorted(env.segment_overrides))
            state = env.segment_overrides[feature_id][0].state
            state.enabled = not state.enabled

    def _advance_experiment(self, env: _Environment, features: list[_ProjectFeature]) -> None:
        """Raise a variant's share; at 100 % conclude and make the winner the default."""
        if not features:
            return
        state = env.defaults[self.rng.choice(features).id]
        if not state.variants:
            return
        variant = self.rng.choice(state.variants)
        total = sum(v.allocation for v in state.variants)
        step = self.rng.choice((5.0, 10.0, 15.0))
        if total + step <= 100:
            variant.allocation = round(variant.allocation + step, 2)
        else:
            state.value = variant.value
            for v in state.variants:
                v.allocation = 0.0

    # the SDK, on every identify call

    def identify(self, identity: _Identity, with_traits: bool) -> list[dict[str, Any]]:
        """Apply an identify call; return the "traits" list of its webhook.

        A GET lists the stored traits with their ids. A POST may change, add or delete stored
        traits and send transient ones; traits it sent are listed as in-memory models (id null),
        as in the real examples.
        """
        rng = self.rng
        sent: set[str] = set()
        transient: list[dict[str, Any]] = []
        if with_traits and not identity.anonymous:
            traits = identity.traits
            roll = rng.random()
            if roll < 0.35 and traits:
                key = rng.choice(list(traits))
                traits[key].value = _trait_value(rng, key, traits[key].value)
                sent.add(key)
            elif roll < 0.43 and traits:
                del traits[rng.choice(list(traits))]  # the SDK sent it with a null value
            elif roll < 0.52:
                missing = [k for k in _TRAIT_KEYS if k not in traits]
                if missing:
                    key = rng.choice(missing)
                    traits[key] = _StoredTrait(self._next("trait"), _trait_value(rng, key))
                    sent.add(key)
            sent.update(k for k in traits if rng.random() < 0.5)
            if rng.random() < 0.4:
                transient = _transient_traits(rng)
        listed = [
            {
                "id": None if key in sent else stored.id,
                "trait_key": key,
                "trait_value": stored.value,
                "transient": False,
            }
            for key, stored in identity.traits.items()
        ]
        return listed + transient

    def flags_json(self, identity: _Identity, now: datetime) -> str:
        """The serialised "flags" list: one flag per feature, evaluated for this identity."""
        env = identity.environment
        members = {s.id for s in self.segments if s.matches(identity)}
        fragments = []
        for feature in self.features:
            if feature.launched_at is not None and feature.launched_at > now:
                continue
            feature_segment = None
            override = env.identity_overrides.get((identity.id, feature.id))
            state = override
            if state is None:
                for candidate in env.segment_overrides.get(feature.id, ()):
                    if candidate.segment.id in members:
                        feature_segment, state = candidate.id, candidate.state
                        break
            if state is None:
                state = env.defaults[feature.id]
            if env.hide_disabled_flags and not state.enabled:
                continue
            value, allocation = state.value, None
            if feature.is_multivariate and state is env.defaults[feature.id]:
                value, allocation = self._bucket(state, identity)
            key = (
                feature.id,
                state.id,
                state.enabled,
                type(value),
                value,
                allocation,
                feature_segment,
                override is not None and identity.id,
            )
            fragment = self._flag_cache.get(key)
            if fragment is None:
                flag: dict[str, Any] = {
                    "enabled": state.enabled,
                    "environment": env.id,
                    "feature": feature.payload,
                    "feature_segment": feature_segment,
                    "feature_state_value": value,
                    "id": state.id,
                    "identity": identity.id if override is not None else None,
                }
                if allocation:
                    flag["percentage_allocation"] = allocation
                elif state.null_allocation and not feature.is_multivariate:
                    flag["percentage_allocation"] = None
                fragment = json.dumps(flag, sort_keys=True)
                self._flag_cache[key] = fragment
            fragments.append(fragment)
        return "[" + ", ".join(fragments) + "]"

    def _bucket(self, state: _FeatureState, identity: _Identity) -> tuple[Any, float | None]:
        """The variant this identity is bucketed into, and that variant's allocation (None for
        the control)."""
        percentage = hashed_percentage(state.id, identity.id)
        start = 0.0
        for variant in sorted(state.variants, key=lambda v: v.id):
            if start <= percentage < start + variant.allocation:
                return variant.value, variant.allocation
            start += variant.allocation
        # The control (the feature state's own value) is no multivariate option: Flagsmith
        # reports no allocation for it.
        return state.value, None

    def segments_json(self, identity: _Identity) -> str:
        listed = [
            {"id": s.id, "member": s.matches(identity), "name": s.name} for s in self.segments
        ]
        return json.dumps(listed, sort_keys=True)


# --- the stream ---------------------------------------------------------------------------------


def iter_deliveries(
    n_deliveries: int,
    *,
    seed: int = 0,
    n_identities: int = 50,
    n_flags: int = 8,
    n_environments: int = 1,
    start: datetime | None = None,
    secret: bytes = b"s3cr3t",
    mean_interval: float = 45.0,
    hide_disabled_flags: bool = False,
    keyed: bool = True,
    operator_interval: float | None = 2400.0,
    timeline: Sequence[Event] = (),
) -> Iterator[SimulatedWebhook]:
    """Deliveries in order of ``at``, strictly increasing; the same seed gives the same bytes.

    ``mean_interval`` is the mean gap between identify calls in simulated seconds; the operator
    changes something at random about every ``operator_interval`` simulated seconds (None: never).
    ``timeline`` adds scripted changes (``demo_timeline``), each applied once simulated time
    reaches it. ``hide_disabled_flags`` mimics the Flagsmith setting of that name: a disabled
    flag is left out of the delivery. ``keyed=False`` posts every environment to the URL
    without a key.
    """
    if n_deliveries < 0 or n_identities < 1 or n_flags < 1 or n_environments < 1:
        raise ValueError("n_deliveries >= 0, n_identities, n_flags, n_environments >= 1")
    n_identities = max(n_identities, n_environments)
    rng = random.Random(seed)
    now = start or DEFAULT_START
    if now.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    now = now.astimezone(UTC)
    project = _Project(
        rng,
        start=now,
        n_identities=n_identities,
        n_flags=n_flags,
        n_environments=n_environments,
        hide_disabled_flags=hide_disabled_flags,
        keyed=keyed,
    )
    weights = [i.weight for i in project.identities]
    never = datetime.max.replace(tzinfo=UTC)
    operator_rate = 1 / operator_interval if operator_interval else 0.0
    next_change = (
        now + timedelta(seconds=rng.expovariate(operator_rate)) if operator_rate else never
    )
    events = sorted(timeline, key=lambda event: event.at)
    repeat: _Identity | None = None

    for _ in range(n_deliveries):
        if repeat is not None:  # the same client identifying again a moment later
            now += timedelta(seconds=rng.uniform(0.05, 3.0))
        else:
            now += timedelta(seconds=rng.expovariate(1 / mean_interval) + 0.001)
        now += timedelta(microseconds=rng.randint(1, 999))
        while next_change <= now:
            project.operate(next_change)
            next_change += timedelta(seconds=rng.expovariate(operator_rate))
        while events and events[0].at <= now:
            events.pop(0).change(project)

        identity = repeat or rng.choices(project.identities, weights)[0]
        with_traits = repeat is None and rng.random() < 0.45
        traits = project.identify(identity, with_traits)
        repeat = identity if repeat is None and rng.random() < 0.08 else None

        body = (
            '{"flags": '
            + project.flags_json(identity, now)
            + ', "identity": '
            + json.dumps(identity.identifier)
            + ', "segments": '
            + project.segments_json(identity)
            + ', "traits": '
            + json.dumps(traits, sort_keys=True)
            + "}"
        ).encode("ascii")
        yield SimulatedWebhook(body, sign(body, secret), identity.environment.key, now)


@dataclass(frozen=True)
class Event:
    """A scripted change to the project at a simulated time."""

    at: datetime
    what: str
    change: Callable[[_Project], None]


def demo_timeline(start: datetime, days: float) -> list[Event]:
    """What an operator does over `days` from `start` in the first environment (production):
    the checkout_button test starts at a 10/10 split, is ramped to 25/25 and stopped; the
    onboarding_steps test starts at 33/33 and runs on; the gradual_rollout segment grows by 5
    points every tenth of the span; new_checkout_flow is killed for a while (a kill switch) and
    turned back on. Times scale with `days`."""

    def at(fraction: float) -> datetime:
        return start + timedelta(seconds=days * 86_400 * fraction)

    def production(project: _Project, name: str) -> _FeatureState:
        feature = next(f for f in project.features if f.name == name)
        return project.environments[0].defaults[feature.id]

    def prepare(project: _Project) -> None:
        for name, values, allocation in (
            ("checkout_button", ("variant_a", "variant_b"), 10.0),
            ("onboarding_steps", (4, 5), 33.0),
        ):
            state = production(project, name)
            state.enabled = False
            state.variants = [_Variant(project._next("variant"), v, allocation) for v in values]
        production(project, "new_checkout_flow").enabled = True
        project.segment("gradual_rollout").operand = 5.0

    def switch(name: str, enabled: bool) -> Callable[[_Project], None]:
        def change(project: _Project) -> None:
            production(project, name).enabled = enabled

        return change

    def split(name: str, allocation: float) -> Callable[[_Project], None]:
        def change(project: _Project) -> None:
            for variant in production(project, name).variants:
                variant.allocation = allocation

        return change

    def grow(project: _Project) -> None:
        rollout = project.segment("gradual_rollout")
        rollout.operand = min(100.0, rollout.operand + 5.0)

    events = [
        Event(start, "prepare: tests off, kill switch on, rollout at 5%", prepare),
        Event(at(0.1), "checkout_button test starts (10/10/80)", switch("checkout_button", True)),
        Event(at(0.2), "onboarding_steps test starts (33/33/34)", switch("onboarding_steps", True)),
        Event(at(0.35), "checkout_button ramped to 25/25/50", split("checkout_button", 25.0)),
        Event(at(0.55), "new_checkout_flow killed", switch("new_checkout_flow", False)),
        Event(at(0.6), "new_checkout_flow back on", switch("new_checkout_flow", True)),
        Event(at(0.8), "checkout_button test stopped", switch("checkout_button", False)),
    ]
    events += [Event(at(step / 10), "gradual_rollout +5%", grow) for step in range(1, 10)]
    return events


def generate(n_deliveries: int, **options: Any) -> list[SimulatedWebhook]:
    """``iter_deliveries`` as a list (same options), for callers that need the whole stream."""
    return list(iter_deliveries(n_deliveries, **options))


# --- sending ------------------------------------------------------------------------------------


def _delivery_id(answer: bytes) -> str | None:
    try:
        parsed = json.loads(answer)
    except ValueError:
        return None
    value = parsed.get("delivery_id") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


def post_all(
    base_url: str,
    deliveries: Iterable[SimulatedWebhook],
    *,
    concurrency: int = 8,
    timeout: float = 10,
) -> list[tuple[int, str | None]]:
    """POST each delivery as Flagsmith would; ``(status, delivery_id)`` per delivery, in order.

    One keep-alive connection per worker thread, so the receiver sees steady connections like
    from a Flagsmith worker pool, and only the standard library (no ``requests`` at runtime). A
    broken connection is reopened and the request retried once (Flagsmith retries too); status
    0 means the request failed at the transport level both times.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    host = parts.hostname
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    prefix = parts.path.rstrip("/") + "/webhooks/flagsmith"
    local = threading.local()
    opened: list[http.client.HTTPConnection] = []
    lock = threading.Lock()

    def connection() -> http.client.HTTPConnection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = connection_class(host, parts.port, timeout=timeout)
            local.conn = conn
            with lock:
                opened.append(conn)
        return conn

    def post(delivery: SimulatedWebhook) -> tuple[int, str | None]:
        path = prefix
        if delivery.environment_key is not None:
            path += "/" + quote(delivery.environment_key, safe="")
        headers = {
            "Content-Type": "application/json",
            "X-Flagsmith-Signature": delivery.signature,
        }
        for attempt in range(2):
            conn = connection()
            try:
                conn.request("POST", path, body=delivery.body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                local.conn = None
                if attempt:
                    return 0, None
                continue
            return response.status, _delivery_id(answer)
        return 0, None  # unreachable; keeps type checkers content

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(post, deliveries))
    finally:
        for conn in opened:
            conn.close()
