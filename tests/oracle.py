"""A pure-Python reference implementation of every mart (models/marts/_marts__models.yml).

Why it exists: the dbt models are the product, and SQL over window functions is easy to get
subtly wrong (runs, gaps, ties, late deliveries). This module computes the same marts the slow,
obvious way from the raw rows, with no DuckDB and no dbt, so tests can compare the warehouse
against it row for row. Keep it boring: clarity over speed.

Input: raw rows ``(delivery_id, received_at, environment_key, body)`` as they land in
``flagsmith_raw.identity_webhooks`` (``received_at`` aware, any zone; normalised to UTC).
Output: ``build_marts(rows)`` -> ``{model_name: [row dict, ...]}`` with exactly the contract's
column names (``COLUMNS``), each list sorted by the model's key (``KEYS``).

Ambiguities in the marts' definitions, and how this oracle resolves them:

1.  Scope. An identity is ``(environment_id, identity)``; ``environment_key`` is not part of it.
    A delivery's ``environment_id`` is the ``environment`` of its first flag (Flagsmith never
    mixes environments in one body); a delivery without flags is scoped to environment ``None``.
2.  Order. Within a scope deliveries are ordered by ``(received_at, delivery_id)``; the
    delivery id only breaks exact timestamp ties. "Latest delivery" uses the same order.
3.  Names. Period-like rows (exposure periods, experiment assignments, segment periods, cohorts)
    take the feature/segment name at the run's latest evaluation. ``first_exposures`` takes the
    name at the identity's latest evaluation of the feature. Dimensions (``features``,
    ``segments``) take names and attributes from the latest delivery in the environment that
    carries the thing.
4.  Experiments (contract v2). An experiment is a feature whose latest type (``features``) is
    MULTIVARIATE; an experiment period is an exposure period of one whose state is enabled with
    assignment source ``default``; its arm is the variant. ``experiment_assignments`` has one row
    per experiment period: ``timestamp`` = ``valid_from``, ``environment_key`` = the key of the
    period's first delivery, names the feature's latest. ``experiment_exposures`` sums them per
    identity; ``experiments`` per feature, with the sample-ratio check computed here with scipy.
5.  Any evaluation is an exposure, including a disabled one: ``first_variant`` may be ``'off'``
    and ``'off'`` rows appear in daily exposures and feature-variant cohorts.
6.  A feature missing from a delivery is skipped for exposure periods and feature-variant
    cohorts, so a period stays current (``valid_to`` null) even if the feature never comes back.
    For segments and traits absence is not skipped: it ends the run.
7.  Traits. State = non-transient traits only; a missing ``transient`` key means false. A
    non-transient trait whose value is null (not expected from Flagsmith) is a stored value of
    type ``'null'`` rather than an absence. If a key is listed both transient and stored in one
    delivery the stored entry is the state; duplicate stored entries: the last one wins.
8.  ``trait_value_number`` is ``float(value)`` for integer and float traits (a double in SQL),
    ``None`` otherwise (booleans are not numbers); ``trait_value_boolean`` only for booleans.
9.  Value text: strings unquoted (the empty string stays ``''``, so an enabled flag with value
    ``''`` has variant ``''``, not ``'on'``); integers ``str(int)``; floats ``json.dumps`` (Python
    repr: ``50.0``, ``1e+16``); booleans ``'true'``/``'false'``; null -> ``None``, type ``'null'``.
    Nested JSON values are not something Flagsmith sends; the oracle raises on them.
10. Segments. A segment is "member" in a delivery when any entry with its id says
    ``member: true``. Segments carry no environment: they take the delivery's environment.
    ``current_member_count`` looks at each identity's latest delivery in that environment.
11. ``percentage_allocation``: absent and null are both ``None``; numbers become ``float``.
12. ``created_date`` is parsed to an aware UTC ``datetime`` (Flagsmith sends ISO-8601 with Z).
13. Daily exposures: rows exist only for (date, environment, feature, variant) combinations that
    had evaluations; ``first_exposures`` counts identities whose first evaluation of the feature
    in that environment fell on that local date in that variant (0 otherwise). Every date of a
    daily mart is the local date in the reporting time zone (``AnalystOptions.reporting_timezone``,
    default UTC) of the timestamp it comes from.
14. Bodies that are not JSON objects with an ``identity`` are skipped (they belong in quarantine).
    Missing ``flags``/``traits``/``segments`` lists count as empty. A feature listed twice in one
    delivery (not expected) keeps its first entry.
15. Simultaneous deliveries. Deliveries of one identity with the same ``received_at`` (two
    workers or two receivers stamping the same microsecond) form one instant: their true order
    is unknown, so the state at that instant is the one of the last by ``delivery_id``, and all
    of them count as evaluations of the run holding that instant. Runs therefore start at
    distinct times and the contract keys of the period marts stay unique. Flag evaluations,
    daily evaluation counts and identities are per delivery and unaffected.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

RawRow = tuple[str, datetime, str | None, bytes]
Row = dict[str, Any]

KEYS: dict[str, tuple[str, ...]] = {
    "flagsmith__flag_evaluations": ("delivery_id", "feature_id"),
    "flagsmith__flag_exposure_periods": ("environment_id", "identity", "feature_id", "valid_from"),
    "flagsmith__first_exposures": ("environment_id", "identity", "feature_id"),
    "flagsmith__experiment_assignments": ("environment_id", "identity", "feature_id", "timestamp"),
    "flagsmith__experiment_exposures": ("environment_id", "identity", "feature_id"),
    "flagsmith__experiments": ("environment_id", "feature_id"),
    "flagsmith__segment_membership_periods": (
        "environment_id",
        "identity",
        "segment_id",
        "valid_from",
    ),
    "flagsmith__trait_history": ("environment_id", "identity", "trait_key", "valid_from"),
    "flagsmith__identities": ("environment_id", "identity"),
    "flagsmith__features": ("environment_id", "feature_id"),
    "flagsmith__segments": ("environment_id", "segment_id"),
    "flagsmith__daily_feature_exposures": (
        "exposure_date",
        "environment_id",
        "feature_id",
        "variant",
    ),
    "flagsmith__cohort_memberships": (
        "environment_id",
        "identity",
        "cohort_type",
        "cohort_key",
        "entered_at",
    ),
    "flagsmith__daily_segment_memberships": ("membership_date", "environment_id", "segment_id"),
    "flagsmith__environments": ("environment_id",),
}
"""Sort order of each mart: the contract's unique key."""

COLUMNS: dict[str, tuple[str, ...]] = {
    "flagsmith__flag_evaluations": (
        "delivery_id",
        "feature_id",
        "received_at",
        "environment_id",
        "environment_key",
        "identity",
        "feature_name",
        "feature_type",
        "feature_state_id",
        "enabled",
        "value",
        "value_type",
        "variant",
        "assignment_source",
        "feature_segment_id",
        "percentage_allocation",
    ),
    "flagsmith__flag_exposure_periods": (
        "environment_id",
        "identity",
        "feature_id",
        "valid_from",
        "feature_name",
        "enabled",
        "value",
        "value_type",
        "variant",
        "assignment_source",
        "valid_to",
        "last_evaluated_at",
        "evaluation_count",
        "is_current",
    ),
    "flagsmith__first_exposures": (
        "environment_id",
        "identity",
        "feature_id",
        "feature_name",
        "first_exposed_at",
        "first_variant",
        "first_enabled",
        "first_value",
        "first_assignment_source",
        "last_evaluated_at",
        "variant_count",
        "is_multi_variant",
    ),
    "flagsmith__experiment_assignments": (
        "environment_id",
        "identity",
        "feature_id",
        "timestamp",
        "user_id",
        "experiment_id",
        "variation_id",
        "experiment_name",
        "variation_name",
        "environment_key",
        "assignment_source",
    ),
    "flagsmith__experiment_exposures": (
        "environment_id",
        "identity",
        "feature_id",
        "feature_name",
        "user_id",
        "first_exposed_at",
        "first_arm",
        "environment_key",
        "last_exposed_at",
        "exposure_count",
        "arm_count",
        "is_multi_arm",
    ),
    "flagsmith__experiments": (
        "environment_id",
        "feature_id",
        "feature_name",
        "first_exposed_at",
        "last_exposed_at",
        "identities_exposed",
        "multi_arm_identities",
        "arm_count",
        "srm_chi_square",
        "srm_degrees_of_freedom",
        "srm_p_value",
    ),
    "flagsmith__segment_membership_periods": (
        "environment_id",
        "identity",
        "segment_id",
        "valid_from",
        "segment_name",
        "valid_to",
        "last_evaluated_at",
        "evaluation_count",
        "is_current",
    ),
    "flagsmith__trait_history": (
        "environment_id",
        "identity",
        "trait_key",
        "valid_from",
        "trait_value",
        "trait_value_type",
        "trait_value_number",
        "trait_value_boolean",
        "valid_to",
        "is_current",
    ),
    "flagsmith__identities": (
        "environment_id",
        "identity",
        "first_seen_at",
        "last_seen_at",
        "delivery_count",
    ),
    "flagsmith__features": (
        "environment_id",
        "feature_id",
        "feature_name",
        "feature_type",
        "default_enabled",
        "initial_value",
        "description",
        "created_date",
        "first_seen_at",
        "last_seen_at",
        "identities_exposed",
    ),
    "flagsmith__segments": (
        "environment_id",
        "segment_id",
        "segment_name",
        "first_seen_at",
        "last_seen_at",
        "current_member_count",
    ),
    "flagsmith__daily_feature_exposures": (
        "exposure_date",
        "environment_id",
        "feature_id",
        "variant",
        "identities",
        "evaluations",
        "first_exposures",
    ),
    "flagsmith__cohort_memberships": (
        "environment_id",
        "identity",
        "cohort_type",
        "cohort_key",
        "entered_at",
        "exited_at",
    ),
    "flagsmith__daily_segment_memberships": (
        "membership_date",
        "environment_id",
        "segment_id",
        "segment_name",
        "members",
        "entered",
        "exited",
    ),
    "flagsmith__environments": (
        "environment_id",
        "environment_keys",
        "first_seen_at",
        "last_seen_at",
        "identities",
        "features",
        "deliveries",
    ),
}
"""Exactly the contract's columns (key first), in the order the contract lists them; the trait
columns (``AnalystOptions.trait_columns``) follow on identities and experiment exposures."""

TRAIT_COLUMN_MARTS = ("flagsmith__identities", "flagsmith__experiment_exposures")


@dataclass(frozen=True)
class AnalystOptions:
    """The analyst options' dbt vars (docs/experiments.md), as the oracle takes them.

    ``identity_map``: (identity, user key) pairs, both text; an identity mapped to several keys
    takes the smallest. ``trait_columns``: (trait key, column name) pairs.
    ``reporting_timezone``: the IANA zone whose local dates the daily marts use.
    """

    identity_map: tuple[tuple[str, str], ...] = ()
    trait_columns: tuple[tuple[str, str], ...] = ()
    reporting_timezone: str = "UTC"

    def local_date(self, at: datetime) -> date:
        return at.astimezone(ZoneInfo(self.reporting_timezone)).date()

    def user_id(self, identity: str) -> str:
        keys = [user for mapped, user in self.identity_map if mapped == identity]
        return min(keys) if keys else identity


NO_OPTIONS = AnalystOptions()


def columns(model: str, options: AnalystOptions = NO_OPTIONS) -> tuple[str, ...]:
    """The columns of `model` under these options."""
    if model in TRAIT_COLUMN_MARTS:
        return COLUMNS[model] + tuple(name for _key, name in options.trait_columns)
    return COLUMNS[model]


# --- parsing ------------------------------------------------------------------------------------


def value_text(value: Any) -> tuple[str | None, str]:
    """Text and type of a JSON scalar, as the marts store flag values and trait values."""
    if value is None:
        return None, "null"
    if isinstance(value, bool):  # before int: bool is an int in Python
        return ("true" if value else "false"), "boolean"
    if isinstance(value, int):
        return str(value), "integer"
    if isinstance(value, float):
        return json.dumps(value), "float"
    if isinstance(value, str):
        return value, "string"
    raise TypeError(f"not a JSON scalar: {value!r}")


@dataclass(frozen=True)
class Evaluation:
    """One flag of one delivery: a row of flagsmith__flag_evaluations, plus feature attributes."""

    delivery_id: str
    received_at: datetime
    environment_id: int | None
    environment_key: str | None
    identity: str
    feature_id: int
    feature_name: str
    feature_type: str
    feature_state_id: int | None
    enabled: bool
    value: str | None
    value_type: str
    variant: str
    assignment_source: str
    feature_segment_id: int | None
    percentage_allocation: float | None
    default_enabled: bool | None
    initial_value: str | None
    description: str | None
    created_date: datetime | None

    @property
    def state(self) -> tuple[bool, str | None, str, str, str]:
        """What an exposure period holds constant."""
        return (self.enabled, self.value, self.value_type, self.variant, self.assignment_source)


@dataclass(frozen=True)
class TraitValue:
    value: str | None
    value_type: str
    number: float | None
    boolean: bool | None


@dataclass(frozen=True)
class ParsedDelivery:
    """One identity webhook, parsed once."""

    delivery_id: str
    received_at: datetime
    environment_key: str | None
    environment_id: int | None
    identity: str
    evaluations: dict[int, Evaluation]  # by feature id, in body order
    traits: dict[str, TraitValue]  # stored (non-transient) traits only
    segments: dict[int, tuple[str, bool]]  # segment id -> (name, member)

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.received_at, self.delivery_id)

    @property
    def scope(self) -> tuple[int | None, str]:
        return (self.environment_id, self.identity)


def _parse_datetime(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _variant(enabled: bool, value: str | None) -> str:
    if not enabled:
        return "off"
    return "on" if value is None else value


def _assignment_source(flag: dict[str, Any]) -> str:
    if flag.get("identity") is not None:
        return "identity_override"
    if flag.get("feature_segment") is not None:
        return "segment_override"
    return "default"


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def parse(raw: RawRow) -> ParsedDelivery | None:
    """Parse one raw row; None for a body that is not an identity webhook (see note 14)."""
    delivery_id, received_at, environment_key, body = raw
    if received_at.tzinfo is None:
        raise ValueError(f"received_at must be timezone-aware: {received_at!r}")
    received_at = received_at.astimezone(UTC)
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or "identity" not in payload:
        return None
    flags = payload.get("flags") or []
    environment_id = flags[0].get("environment") if flags else None
    identity = payload["identity"]

    evaluations: dict[int, Evaluation] = {}
    for flag in flags:
        feature = flag["feature"]
        if feature["id"] in evaluations:
            continue
        enabled = bool(flag["enabled"])
        value, value_type = value_text(flag.get("feature_state_value"))
        evaluations[feature["id"]] = Evaluation(
            delivery_id=delivery_id,
            received_at=received_at,
            environment_id=environment_id,
            environment_key=environment_key,
            identity=identity,
            feature_id=feature["id"],
            feature_name=feature["name"],
            feature_type=feature["type"],
            feature_state_id=flag.get("id"),
            enabled=enabled,
            value=value,
            value_type=value_type,
            variant=_variant(enabled, value),
            assignment_source=_assignment_source(flag),
            feature_segment_id=flag.get("feature_segment"),
            percentage_allocation=_optional_float(flag.get("percentage_allocation")),
            default_enabled=feature.get("default_enabled"),
            initial_value=feature.get("initial_value"),
            description=feature.get("description"),
            created_date=_parse_datetime(feature.get("created_date")),
        )

    traits: dict[str, TraitValue] = {}
    for trait in payload.get("traits") or []:
        if trait.get("transient", False):
            continue
        raw_value = trait.get("trait_value")
        text, value_type = value_text(raw_value)
        traits[trait["trait_key"]] = TraitValue(
            value=text,
            value_type=value_type,
            number=float(raw_value) if value_type in ("integer", "float") else None,
            boolean=raw_value if value_type == "boolean" else None,
        )

    segments: dict[int, tuple[str, bool]] = {}
    for segment in payload.get("segments") or []:
        member = bool(segment.get("member")) or segments.get(segment["id"], ("", False))[1]
        segments[segment["id"]] = (segment["name"], member)

    return ParsedDelivery(
        delivery_id=delivery_id,
        received_at=received_at,
        environment_key=environment_key,
        environment_id=environment_id,
        identity=identity,
        evaluations=evaluations,
        traits=traits,
        segments=segments,
    )


# --- runs ---------------------------------------------------------------------------------------

_ABSENT = object()
"""State of a delivery that does not hold the thing at all: ends a run, starts none."""


@dataclass
class Run:
    """An unbroken sequence of deliveries in one state."""

    state: Hashable
    items: list[Any] = field(default_factory=list)
    valid_from: datetime | None = None
    last_at: datetime | None = None
    valid_to: datetime | None = None


def runs(sequence: Iterable[tuple[datetime, Hashable, Any]]) -> list[Run]:
    """Group ordered ``(received_at, state, item)`` into runs of equal state.

    Elements with the same time are one instant (ambiguity 15): the instant's state is its last
    element's, and all its items go to the run that state belongs to (none for ``_ABSENT``).
    ``valid_to`` of a run is the time of the first instant after it (another state, or
    ``_ABSENT``). Callers drop elements that must be skipped before calling.
    """
    instants: list[tuple[datetime, Hashable, list[Any]]] = []
    for at, state, item in sequence:
        if instants and instants[-1][0] == at:
            instants[-1] = (at, state, [*instants[-1][2], item])
        else:
            instants.append((at, state, [item]))
    result: list[Run] = []
    current: Run | None = None
    for at, state, items in instants:
        if current is not None and state == current.state:
            current.items.extend(items)
            current.last_at = at
            continue
        if current is not None:
            current.valid_to = at
            current = None
        if state is not _ABSENT:
            current = Run(state=state, items=list(items), valid_from=at, last_at=at)
            result.append(current)
    return result


# --- marts --------------------------------------------------------------------------------------


def _sort_value(value: Any) -> tuple[bool, Any]:
    return (value is not None, value)


def _sorted(model: str, rows: list[Row], options: AnalystOptions) -> list[Row]:
    key = KEYS[model]
    ordered = sorted(rows, key=lambda row: tuple(_sort_value(row[col]) for col in key))
    selected = columns(model, options)
    return [{col: row[col] for col in selected} for row in ordered]


def _by_scope(
    deliveries: Sequence[ParsedDelivery],
) -> dict[tuple[int | None, str], list[ParsedDelivery]]:
    scopes: dict[tuple[int | None, str], list[ParsedDelivery]] = defaultdict(list)
    for delivery in sorted(deliveries, key=lambda d: d.order):
        scopes[delivery.scope].append(delivery)
    return scopes


def _feature_histories(
    scopes: dict[tuple[int | None, str], list[ParsedDelivery]],
) -> dict[tuple[int | None, str, int], list[Evaluation]]:
    """Evaluations of each (environment, identity, feature), ordered; skipped deliveries gone."""
    histories: dict[tuple[int | None, str, int], list[Evaluation]] = defaultdict(list)
    for (environment_id, identity), deliveries in scopes.items():
        for delivery in deliveries:
            for feature_id, evaluation in delivery.evaluations.items():
                histories[(environment_id, identity, feature_id)].append(evaluation)
    return histories


def flag_evaluations(deliveries: Sequence[ParsedDelivery]) -> list[Row]:
    return [
        {col: getattr(e, col) for col in COLUMNS["flagsmith__flag_evaluations"]}
        for d in deliveries
        for e in d.evaluations.values()
    ]


def _exposure_runs(history: list[Evaluation]) -> list[Run]:
    return runs((e.received_at, e.state, e) for e in history)


def flag_exposure_periods(
    histories: dict[tuple[int | None, str, int], list[Evaluation]],
) -> list[Row]:
    rows = []
    for (environment_id, identity, feature_id), history in histories.items():
        for run in _exposure_runs(history):
            enabled, value, value_type, variant, source = run.state  # type: ignore[misc]
            rows.append(
                {
                    "environment_id": environment_id,
                    "identity": identity,
                    "feature_id": feature_id,
                    "valid_from": run.valid_from,
                    "feature_name": run.items[-1].feature_name,
                    "enabled": enabled,
                    "value": value,
                    "value_type": value_type,
                    "variant": variant,
                    "assignment_source": source,
                    "valid_to": run.valid_to,
                    "last_evaluated_at": run.last_at,
                    "evaluation_count": len(run.items),
                    "is_current": run.valid_to is None,
                }
            )
    return rows


def _experiments(
    histories: dict[tuple[int | None, str, int], list[Evaluation]],
) -> dict[tuple[int | None, int], str]:
    """(environment_id, feature_id) -> latest name, of every feature whose latest type is
    MULTIVARIATE."""
    return {
        (row["environment_id"], row["feature_id"]): row["feature_name"]
        for row in features(histories)
        if row["feature_type"] == "MULTIVARIATE"
    }


def _experiment_runs(history: list[Evaluation]) -> list[Run]:
    """The experiment periods of one pair: exposure runs served enabled by the default split."""
    return [
        run
        for run in _exposure_runs(history)
        if run.state[0] and run.state[4] == "default"  # type: ignore[index]
    ]


def experiment_assignments(
    histories: dict[tuple[int | None, str, int], list[Evaluation]],
    options: AnalystOptions,
) -> list[Row]:
    experiments = _experiments(histories)
    rows = []
    for (environment_id, identity, feature_id), history in histories.items():
        name = experiments.get((environment_id, feature_id))
        if name is None:
            continue
        for run in _experiment_runs(history):
            arm = run.state[3]  # type: ignore[index]
            rows.append(
                {
                    "environment_id": environment_id,
                    "identity": identity,
                    "feature_id": feature_id,
                    "timestamp": run.valid_from,
                    "user_id": options.user_id(identity),
                    "experiment_id": name,
                    "variation_id": arm,
                    "experiment_name": name,
                    "variation_name": arm,
                    "environment_key": run.items[0].environment_key,
                    "assignment_source": "default",
                }
            )
    return rows


def _traits_at(deliveries: list[ParsedDelivery], at: datetime) -> dict[str, TraitValue]:
    """The stored traits of a scope at an instant: those of its last delivery received at or
    before it (the last by delivery_id among those of that instant)."""
    state: dict[str, TraitValue] = {}
    for delivery in deliveries:  # in (received_at, delivery_id) order
        if delivery.received_at > at:
            break
        state = delivery.traits
    return state


def _trait_columns(traits: dict[str, TraitValue], options: AnalystOptions) -> Row:
    return {
        name: (traits[key].value if key in traits else None) for key, name in options.trait_columns
    }


def experiment_exposures(
    scopes: dict[tuple[int | None, str], list[ParsedDelivery]],
    histories: dict[tuple[int | None, str, int], list[Evaluation]],
    options: AnalystOptions,
) -> list[Row]:
    experiments = _experiments(histories)
    rows = []
    for (environment_id, identity, feature_id), history in histories.items():
        name = experiments.get((environment_id, feature_id))
        periods = _experiment_runs(history) if name is not None else []
        if not periods:
            continue
        first = periods[0]
        arms = {run.state[3] for run in periods}  # type: ignore[index]
        first_exposed_at = first.valid_from
        assert first_exposed_at is not None
        rows.append(
            {
                "environment_id": environment_id,
                "identity": identity,
                "feature_id": feature_id,
                "feature_name": name,
                "user_id": options.user_id(identity),
                "first_exposed_at": first_exposed_at,
                "first_arm": first.state[3],  # type: ignore[index]
                "environment_key": first.items[0].environment_key,
                "last_exposed_at": max(run.last_at for run in periods),  # type: ignore[type-var]
                "exposure_count": sum(len(run.items) for run in periods),
                "arm_count": len(arms),
                "is_multi_arm": len(arms) > 1,
                **(
                    _trait_columns(
                        _traits_at(scopes[(environment_id, identity)], first_exposed_at), options
                    )
                    if options.trait_columns
                    else {}
                ),
            }
        )
    return rows


def _srm(
    observed: dict[str, int], shares: dict[str, float | None]
) -> tuple[float | None, int | None, float | None]:
    """(chi-square, degrees of freedom, p-value) of the sample-ratio check, or three Nones."""
    from scipy.stats import chi2

    missing = [arm for arm, share in shares.items() if share is None]
    reported = sum(share for share in shares.values() if share is not None)
    if len(missing) == 1:
        shares = {**shares, missing[0]: 100.0 - reported}
    elif missing or abs(reported - 100.0) > 0.001:
        return None, None, None
    n = sum(observed.values())
    expected = {arm: n * share / 100.0 for arm, share in shares.items()}  # type: ignore[operator]
    if (
        len(shares) < 2
        or min(shares.values()) <= 0  # type: ignore[type-var]
        or n < 100
        or min(expected.values()) < 5
    ):
        return None, None, None
    statistic = sum((observed[arm] - expected[arm]) ** 2 / expected[arm] for arm in shares)
    freedom = len(shares) - 1
    return statistic, freedom, float(chi2.sf(statistic, freedom))


def experiments(
    histories: dict[tuple[int | None, str, int], list[Evaluation]],
) -> list[Row]:
    names = _experiments(histories)
    exposures = experiment_exposures({}, histories, NO_OPTIONS)  # no trait columns
    arms: dict[tuple[int | None, int], set[str]] = defaultdict(set)
    allocations: dict[tuple[int | None, int, str], tuple[tuple[datetime, str], float]] = {}
    for (environment_id, _identity, feature_id), history in histories.items():
        if (environment_id, feature_id) not in names:
            continue
        for run in _experiment_runs(history):
            arms[(environment_id, feature_id)].add(run.state[3])  # type: ignore[index]
        for e in history:
            if (
                e.enabled
                and e.assignment_source == "default"
                and e.percentage_allocation is not None
            ):
                key = (environment_id, feature_id, e.variant)
                order = (e.received_at, e.delivery_id)
                if key not in allocations or allocations[key][0] < order:
                    allocations[key] = (order, e.percentage_allocation)
    per_experiment: dict[tuple[int | None, int], list[Row]] = defaultdict(list)
    for row in exposures:
        per_experiment[(row["environment_id"], row["feature_id"])].append(row)
    rows = []
    for (environment_id, feature_id), units in per_experiment.items():
        experiment_arms = arms[(environment_id, feature_id)]
        observed = {arm: 0 for arm in experiment_arms}
        for unit in units:
            observed[unit["first_arm"]] += 1
        shares = {
            arm: allocations[(environment_id, feature_id, arm)][1]
            if (environment_id, feature_id, arm) in allocations
            else None
            for arm in experiment_arms
        }
        statistic, freedom, p_value = _srm(observed, shares)
        rows.append(
            {
                "environment_id": environment_id,
                "feature_id": feature_id,
                "feature_name": names[(environment_id, feature_id)],
                "first_exposed_at": min(unit["first_exposed_at"] for unit in units),
                "last_exposed_at": max(unit["last_exposed_at"] for unit in units),
                "identities_exposed": len(units),
                "multi_arm_identities": sum(1 for unit in units if unit["is_multi_arm"]),
                "arm_count": len(experiment_arms),
                "srm_chi_square": statistic,
                "srm_degrees_of_freedom": freedom,
                "srm_p_value": p_value,
            }
        )
    return rows


def first_exposures(
    histories: dict[tuple[int | None, str, int], list[Evaluation]],
) -> list[Row]:
    rows = []
    for (environment_id, identity, feature_id), history in histories.items():
        exposure_runs = _exposure_runs(history)
        enabled, value, _value_type, variant, source = exposure_runs[0].state  # type: ignore[misc]
        last = history[-1]
        variant_count = len({run.state[3] for run in exposure_runs})  # type: ignore[index]
        rows.append(
            {
                "environment_id": environment_id,
                "identity": identity,
                "feature_id": feature_id,
                "feature_name": last.feature_name,
                "first_exposed_at": exposure_runs[0].valid_from,
                "first_variant": variant,
                "first_enabled": enabled,
                "first_value": value,
                "first_assignment_source": source,
                "last_evaluated_at": last.received_at,
                "variant_count": variant_count,
                "is_multi_variant": variant_count > 1,
            }
        )
    return rows


def _segment_runs(deliveries: list[ParsedDelivery], segment_id: int) -> list[Run]:
    def state(d: ParsedDelivery) -> object:
        listed = d.segments.get(segment_id)
        return True if listed is not None and listed[1] else _ABSENT

    return runs((d.received_at, state(d), d) for d in deliveries)


def segment_membership_periods(
    scopes: dict[tuple[int | None, str], list[ParsedDelivery]],
) -> list[Row]:
    rows = []
    for (environment_id, identity), deliveries in scopes.items():
        segment_ids = {s for d in deliveries for s in d.segments}
        for segment_id in segment_ids:
            for run in _segment_runs(deliveries, segment_id):
                rows.append(
                    {
                        "environment_id": environment_id,
                        "identity": identity,
                        "segment_id": segment_id,
                        "valid_from": run.valid_from,
                        "segment_name": run.items[-1].segments[segment_id][0],
                        "valid_to": run.valid_to,
                        "last_evaluated_at": run.last_at,
                        "evaluation_count": len(run.items),
                        "is_current": run.valid_to is None,
                    }
                )
    return rows


def trait_history(scopes: dict[tuple[int | None, str], list[ParsedDelivery]]) -> list[Row]:
    rows = []
    for (environment_id, identity), deliveries in scopes.items():
        trait_keys = {k for d in deliveries for k in d.traits}
        for trait_key in trait_keys:
            sequence = ((d.received_at, d.traits.get(trait_key, _ABSENT), d) for d in deliveries)
            for run in runs(sequence):
                stored: TraitValue = run.state  # type: ignore[assignment]
                rows.append(
                    {
                        "environment_id": environment_id,
                        "identity": identity,
                        "trait_key": trait_key,
                        "valid_from": run.valid_from,
                        "trait_value": stored.value,
                        "trait_value_type": stored.value_type,
                        "trait_value_number": stored.number,
                        "trait_value_boolean": stored.boolean,
                        "valid_to": run.valid_to,
                        "is_current": run.valid_to is None,
                    }
                )
    return rows


def identities(
    scopes: dict[tuple[int | None, str], list[ParsedDelivery]], options: AnalystOptions
) -> list[Row]:
    return [
        {
            "environment_id": environment_id,
            "identity": identity,
            "first_seen_at": deliveries[0].received_at,
            "last_seen_at": deliveries[-1].received_at,
            "delivery_count": len(deliveries),
            **_trait_columns(deliveries[-1].traits, options),
        }
        for (environment_id, identity), deliveries in scopes.items()
    ]


def features(histories: dict[tuple[int | None, str, int], list[Evaluation]]) -> list[Row]:
    per_feature: dict[tuple[int | None, int], list[Evaluation]] = defaultdict(list)
    for (environment_id, _identity, feature_id), history in histories.items():
        per_feature[(environment_id, feature_id)].extend(history)
    rows = []
    for (environment_id, feature_id), evaluations in per_feature.items():
        evaluations.sort(key=lambda e: (e.received_at, e.delivery_id))
        latest = evaluations[-1]
        rows.append(
            {
                "environment_id": environment_id,
                "feature_id": feature_id,
                "feature_name": latest.feature_name,
                "feature_type": latest.feature_type,
                "default_enabled": latest.default_enabled,
                "initial_value": latest.initial_value,
                "description": latest.description,
                "created_date": latest.created_date,
                "first_seen_at": evaluations[0].received_at,
                "last_seen_at": latest.received_at,
                "identities_exposed": len({e.identity for e in evaluations}),
            }
        )
    return rows


def segments(scopes: dict[tuple[int | None, str], list[ParsedDelivery]]) -> list[Row]:
    listings: dict[tuple[int | None, int], list[ParsedDelivery]] = defaultdict(list)
    members: dict[tuple[int | None, int], int] = defaultdict(int)
    for (environment_id, _identity), deliveries in scopes.items():
        for delivery in deliveries:
            for segment_id in delivery.segments:
                listings[(environment_id, segment_id)].append(delivery)
        for segment_id, (_name, member) in deliveries[-1].segments.items():
            if member:
                members[(environment_id, segment_id)] += 1
    rows = []
    for (environment_id, segment_id), deliveries in listings.items():
        deliveries.sort(key=lambda d: d.order)
        rows.append(
            {
                "environment_id": environment_id,
                "segment_id": segment_id,
                "segment_name": deliveries[-1].segments[segment_id][0],
                "first_seen_at": deliveries[0].received_at,
                "last_seen_at": deliveries[-1].received_at,
                "current_member_count": members[(environment_id, segment_id)],
            }
        )
    return rows


def daily_feature_exposures(
    histories: dict[tuple[int | None, str, int], list[Evaluation]],
    options: AnalystOptions = NO_OPTIONS,
) -> list[Row]:
    identities_per_day: dict[tuple[date, int | None, int, str], set[str]] = defaultdict(set)
    evaluations: dict[tuple[date, int | None, int, str], int] = defaultdict(int)
    firsts: dict[tuple[date, int | None, int, str], int] = defaultdict(int)
    for (environment_id, identity, feature_id), history in histories.items():
        for e in history:
            key = (options.local_date(e.received_at), environment_id, feature_id, e.variant)
            identities_per_day[key].add(identity)
            evaluations[key] += 1
        first = _exposure_runs(history)[0]
        first_variant = first.state[3]  # type: ignore[index]
        first_date = options.local_date(first.valid_from)  # type: ignore[arg-type]
        firsts[(first_date, environment_id, feature_id, first_variant)] += 1
    return [
        {
            "exposure_date": key[0],
            "environment_id": key[1],
            "feature_id": key[2],
            "variant": key[3],
            "identities": len(identities_per_day[key]),
            "evaluations": evaluations[key],
            "first_exposures": firsts.get(key, 0),
        }
        for key in evaluations
    ]


def cohort_memberships(
    scopes: dict[tuple[int | None, str], list[ParsedDelivery]],
    histories: dict[tuple[int | None, str, int], list[Evaluation]],
) -> list[Row]:
    rows = []
    for (environment_id, identity, _feature_id), history in histories.items():
        for run in runs((e.received_at, e.variant, e) for e in history):
            rows.append(
                {
                    "environment_id": environment_id,
                    "identity": identity,
                    "cohort_type": "feature_variant",
                    "cohort_key": f"{run.items[-1].feature_name}={run.state}",
                    "entered_at": run.valid_from,
                    "exited_at": run.valid_to,
                }
            )
    for period in segment_membership_periods(scopes):
        rows.append(
            {
                "environment_id": period["environment_id"],
                "identity": period["identity"],
                "cohort_type": "segment",
                "cohort_key": period["segment_name"],
                "entered_at": period["valid_from"],
                "exited_at": period["valid_to"],
            }
        )
    return rows


def daily_segment_memberships(
    scopes: dict[tuple[int | None, str], list[ParsedDelivery]], options: AnalystOptions = NO_OPTIONS
) -> list[Row]:
    """Every local date from a segment's first membership to its environment's newest delivery;
    members counted by testing each period against each date, the obvious way."""
    newest: dict[int, datetime] = {}
    for (environment_id, _identity), deliveries in scopes.items():
        if environment_id is not None:
            last = deliveries[-1].received_at
            newest[environment_id] = max(newest.get(environment_id, last), last)
    names = {(r["environment_id"], r["segment_id"]): r["segment_name"] for r in segments(scopes)}
    periods: dict[tuple[int, int], list[tuple[date, date | None]]] = defaultdict(list)
    for period in segment_membership_periods(scopes):
        if period["environment_id"] is None:
            continue
        valid_to = period["valid_to"]
        periods[(period["environment_id"], period["segment_id"])].append(
            (
                options.local_date(period["valid_from"]),
                None if valid_to is None else options.local_date(valid_to),
            )
        )
    rows = []
    for (environment_id, segment_id), spans in periods.items():
        day = min(start for start, _end in spans)
        last_day = options.local_date(newest[environment_id])
        while day <= last_day:
            rows.append(
                {
                    "membership_date": day,
                    "environment_id": environment_id,
                    "segment_id": segment_id,
                    "segment_name": names[(environment_id, segment_id)],
                    "members": sum(
                        1 for start, end in spans if start <= day and (end is None or end > day)
                    ),
                    "entered": sum(1 for start, _end in spans if start == day),
                    "exited": sum(1 for _start, end in spans if end == day),
                }
            )
            day += timedelta(days=1)
    return rows


def environments(
    scopes: dict[tuple[int | None, str], list[ParsedDelivery]],
) -> list[Row]:
    per_environment: dict[int, list[ParsedDelivery]] = defaultdict(list)
    for (environment_id, _identity), deliveries in scopes.items():
        if environment_id is not None:
            per_environment[environment_id].extend(deliveries)
    rows = []
    for environment_id, deliveries in per_environment.items():
        keys = sorted(
            {d.environment_key for d in deliveries if d.environment_key is not None},
            key=lambda key: key.encode(),
        )
        rows.append(
            {
                "environment_id": environment_id,
                "environment_keys": ",".join(keys) if keys else None,
                "first_seen_at": min(d.received_at for d in deliveries),
                "last_seen_at": max(d.received_at for d in deliveries),
                "identities": len({d.identity for d in deliveries}),
                "features": len({f for d in deliveries for f in d.evaluations}),
                "deliveries": len(deliveries),
            }
        )
    return rows


def build_marts(
    raw_rows: Iterable[RawRow], options: AnalystOptions = NO_OPTIONS
) -> dict[str, list[Row]]:
    """Every contract mart from the raw deliveries, each sorted by its key."""
    parsed = [d for d in map(parse, raw_rows) if d is not None]
    parsed.sort(key=lambda d: d.order)
    scopes = _by_scope(parsed)
    histories = _feature_histories(scopes)
    builders: dict[str, Callable[[], list[Row]]] = {
        "flagsmith__flag_evaluations": lambda: flag_evaluations(parsed),
        "flagsmith__flag_exposure_periods": lambda: flag_exposure_periods(histories),
        "flagsmith__first_exposures": lambda: first_exposures(histories),
        "flagsmith__experiment_assignments": lambda: experiment_assignments(histories, options),
        "flagsmith__experiment_exposures": lambda: experiment_exposures(scopes, histories, options),
        "flagsmith__experiments": lambda: experiments(histories),
        "flagsmith__segment_membership_periods": lambda: segment_membership_periods(scopes),
        "flagsmith__trait_history": lambda: trait_history(scopes),
        "flagsmith__identities": lambda: identities(scopes, options),
        "flagsmith__features": lambda: features(histories),
        "flagsmith__segments": lambda: segments(scopes),
        "flagsmith__daily_feature_exposures": lambda: daily_feature_exposures(histories, options),
        "flagsmith__cohort_memberships": lambda: cohort_memberships(scopes, histories),
        "flagsmith__daily_segment_memberships": lambda: daily_segment_memberships(scopes, options),
        "flagsmith__environments": lambda: environments(scopes),
    }
    return {model: _sorted(model, build(), options) for model, build in builders.items()}
