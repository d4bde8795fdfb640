"""The webhook receiver: verify, store durably, answer. Nothing else happens on the request path.

Flagsmith gives up after three tries within a few seconds, so the receiver never touches the
warehouse: it proves the body came from Flagsmith, appends it to the spool with an fsync, and
answers 202 with the delivery's id. The loader takes it from there.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .config import Settings
from .payload import classify
from .signature import HEADER, SignatureError, verify
from .spool import (
    Delivery,
    SpoolWriteError,
    SpoolWriter,
    ensure_layout,
    is_writable,
    new_delivery_id,
)

log = logging.getLogger("flagsmith_warehouse.receiver")

EXTENSION = "flagsmith_warehouse"
# The environment key is a label of the user's choosing; keep it to what fits a path and a column.
_ENVIRONMENT_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

bp = Blueprint("receiver", __name__)


class Receiver:
    """What the app needs at request time, attached with `init_app`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        ensure_layout(settings.spool_dir)
        self.writer = SpoolWriter(settings.spool_dir)

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self
        app.config["MAX_CONTENT_LENGTH"] = self.settings.max_body_bytes


def _receiver() -> Receiver:
    return current_app.extensions[EXTENSION]


def _json(code: int, **fields: object) -> Response:
    return Response(orjson.dumps(fields), status=code, mimetype="application/json")


def _log(event: str, **fields: object) -> None:
    log.info(orjson.dumps({"event": event, **fields}).decode())


@bp.post("/webhooks/flagsmith", defaults={"environment_key": None})
@bp.post("/webhooks/flagsmith/<environment_key>")
def receive(environment_key: str | None) -> Response:
    started = time.perf_counter()
    receiver = _receiver()
    if environment_key is not None and not _ENVIRONMENT_KEY.match(environment_key):
        return _json(
            404, error="not_found", detail="environment key must match [A-Za-z0-9_.:-]{1,128}"
        )
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        _log("refused", reason="too_large", environment_key=environment_key)
        return _json(413, error="too_large", limit_bytes=receiver.settings.max_body_bytes)

    secrets = receiver.settings.secrets
    if secrets:
        try:
            verified = verify(body, request.headers.get(HEADER), secrets)
        except SignatureError as error:
            _log("refused", reason=error.reason, environment_key=environment_key)
            return _json(401, error=error.reason)
        signature_status, fingerprint = "verified", verified.secret_fingerprint
    else:  # only reachable when serve was started with --allow-unsigned
        signature_status, fingerprint = "unsigned", None

    verdict = classify(body)
    now = datetime.now(UTC)
    delivery = Delivery(
        delivery_id=new_delivery_id(now),
        received_at=now,
        body=body,
        environment_key=environment_key,
        signature_status=signature_status,
        secret_fingerprint=fingerprint,
        kind=verdict.kind,
        reason=verdict.reason,
    )
    try:
        receiver.writer.append(delivery)
    except SpoolWriteError as error:
        _log(
            "spool_error",
            reason="spool_unwritable",
            errno=error.errno,
            environment_key=environment_key,
        )
        return _json(503, error="spool_unwritable")
    status = "accepted" if verdict.is_identity else "quarantined"
    _log(
        "delivery",
        delivery_id=delivery.delivery_id,
        status=status,
        reason=verdict.reason,
        environment_key=environment_key,
        signature_status=signature_status,
        bytes=len(body),
        ms=round((time.perf_counter() - started) * 1000, 3),
    )
    answer = {"delivery_id": delivery.delivery_id, "status": status}
    if verdict.reason:
        answer["reason"] = verdict.reason
    return _json(202, **answer)


@bp.get("/livez")
def livez() -> Response:
    return _json(200, status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    if is_writable(_receiver().settings.spool_dir):
        return _json(200, status="ready")
    return _json(503, status="spool_unwritable")


def _http_error(error: HTTPException) -> Response:
    return _json(error.code or 500, error=(error.name or "error").lower().replace(" ", "_"))


def create_app(settings: Settings | None = None, test_config: dict | None = None) -> Flask:
    """Build the receiver: defaults, then the environment, then a test's overrides."""
    app = Flask(__name__)
    settings = settings or Settings.from_env()
    Receiver(settings).init_app(app)
    if test_config:
        app.config.update(test_config)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    return app
