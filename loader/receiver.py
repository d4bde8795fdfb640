"""The webhook receiver: verify, store durably, answer. Nothing else happens on the request path.

Flagsmith gives up after three tries within a few seconds, so the receiver never touches the
warehouse: it proves the body came from Flagsmith, appends it to the spool with an fsync, and
answers 202 with the delivery's id. The loader takes it from there.

Decisions an operator may look for:
- The signature is checked before anything else is read from the request, so an unsigned caller
  learns nothing but 401 (or 413 when it sends too much).
- The Content-Type is not trusted and never refused: the signed bytes are what counts. An
  authentic body is stored whatever its declared type, and quarantined if it is not an identity
  webhook, so nothing Flagsmith signed is ever lost to a header.
- A failed write is answered 503, never 2xx: Flagsmith then retries.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import cast

import orjson
from flask import Blueprint, Flask, Request, Response, current_app, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.local import LocalProxy

from . import metrics
from .config import ENVIRONMENT_KEY, Settings
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

bp = Blueprint("receiver", __name__)


class Receiver:
    """What the app needs at request time, attached with `init_app`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.unsigned = not settings.has_secrets and settings.allow_unsigned
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


def _refuse(code: int, reason: str, environment_key: str | None, **extra: object) -> Response:
    metrics.REFUSED.labels(reason).inc()
    _log("refused", reason=reason, environment_key=environment_key, remote=request.remote_addr)
    return _json(code, error=reason, **extra)


@bp.post("/webhooks/flagsmith", defaults={"environment_key": None})
@bp.post("/webhooks/flagsmith/<environment_key>")
def receive(environment_key: str | None) -> Response:
    started = time.perf_counter()
    try:
        return _receive(environment_key, started)
    finally:
        metrics.LATENCY.observe(time.perf_counter() - started)


def _receive(environment_key: str | None, started: float) -> Response:
    receiver = _receiver()
    # The proxy costs a lookup on every attribute (flask types it as the Request it stands for).
    req = cast("LocalProxy[Request]", request)._get_current_object()
    if environment_key is not None and not ENVIRONMENT_KEY.fullmatch(environment_key):
        return _refuse(404, "unknown_environment_key", None)
    limit = req.max_content_length or receiver.settings.max_body_bytes
    try:
        body = _read_body(req, limit)
    except RequestEntityTooLarge:
        return _refuse(413, "too_large", environment_key, limit_bytes=limit)

    if receiver.unsigned:
        signature_status, fingerprint = "unsigned", None
    else:
        try:
            secrets = receiver.settings.secrets_for(environment_key)
            verified = verify(body, req.headers.get(HEADER), secrets)
        except SignatureError as error:
            return _refuse(401, error.reason, environment_key)
        signature_status, fingerprint = "verified", verified.secret_fingerprint

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
        metrics.STORE_FAILURES.inc()
        _log(
            "store_failed",
            delivery_id=delivery.delivery_id,
            errno=error.errno,
            error=error.strerror,
            environment_key=environment_key,
        )
        return _json(503, error="spool_unwritable")
    if verdict.is_identity:
        metrics.ACCEPTED.inc()
        status = "accepted"
    else:
        metrics.QUARANTINED.labels(verdict.reason).inc()
        status = "quarantined"
    _log(
        "delivery",
        delivery_id=delivery.delivery_id,
        status=status,
        reason=verdict.reason,
        environment_key=environment_key,
        signature_status=signature_status,
        secret=fingerprint,
        bytes=len(body),
        ms=round((time.perf_counter() - started) * 1000, 3),
    )
    answer = {"delivery_id": delivery.delivery_id, "status": status}
    if verdict.reason:
        answer["reason"] = verdict.reason
    return _json(202, **answer)


def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, or RequestEntityTooLarge past `limit` bytes, declared or not.

    A declared size over the limit is refused before anything is read; otherwise the declared
    bytes are read straight from the WSGI stream (gunicorn's stream ends at the Content-Length),
    not through werkzeug's stream wrappers, and fewer bytes than declared are a 400. A chunked body
    has no declared size, and werkzeug would silently cut it at the limit (the signature would
    then fail with a misleading 401), so it is read here up to one byte past the limit to tell
    "exactly at the limit" from "over it".
    """
    length = request.content_length
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        body = request.environ["wsgi.input"].read(length)
        if len(body) != length:  # the sender stopped early: not the body it declared
            raise ClientDisconnected()
        return body
    if "wsgi.input" not in request.environ:
        return request.get_data(cache=False)
    stream = request.environ["wsgi.input"]
    data = bytearray()
    while len(data) <= limit:
        chunk = stream.read(min(1 << 16, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return bytes(data)


@bp.get("/livez")
def livez() -> Response:
    return _json(200, status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    if is_writable(_receiver().settings.spool_dir):
        return _json(200, status="ready")
    return _json(503, status="spool_unwritable")


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    receiver = _receiver()
    body, content_type = metrics.render(receiver.settings.spool_dir, receiver.unsigned)
    return Response(body, status=200, content_type=content_type)


def _http_error(error: HTTPException) -> Response:
    return _json(error.code or 500, error=(error.name or "error").lower().replace(" ", "_"))


def _unexpected_error(error: Exception) -> Response:
    # Never a 2xx for something that failed; never the details (or a body) to the caller.
    log.exception("unexpected error while handling %s %s", request.method, request.path)
    return _json(500, error="internal_error")


def create_app(settings: Settings | None = None, test_config: dict | None = None) -> Flask:
    """Build the receiver: defaults, then the environment, then a test's overrides."""
    app = Flask(__name__)
    settings = settings or Settings.from_env()
    Receiver(settings).init_app(app)
    if test_config:
        app.config.update(test_config)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app
