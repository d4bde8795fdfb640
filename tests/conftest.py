"""Shared fixtures: settings on a temporary spool, the Flask app, signed request builders."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from loader.config import Settings
from loader.receiver import create_app

from .postgres import postgres_database  # noqa: F401  (a fixture for every test module)

REPO = Path(__file__).resolve().parent.parent
# Real Flagsmith bodies and their signatures (secret s3cr3t), copied from the project brief.
SHARED = REPO / "tests" / "fixtures" / "flagsmith"
SECRET = b"s3cr3t"


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def shared_examples() -> list[tuple[str, bytes, str]]:
    """The real Flagsmith bodies and their signatures (secret s3cr3t), as (name, body, sig)."""
    if not SHARED.is_dir():
        pytest.fail(f"the real Flagsmith examples are missing: {SHARED}")
    return [
        (path.stem, path.read_bytes(), path.with_suffix(".sig").read_text().strip())
        for path in sorted(SHARED.glob("*.json"))
    ]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No test reads the developer's own FLAGSMITH_* settings or dlt's global folders."""
    for name in list(os.environ):
        if name.startswith("FLAGSMITH_") and name != "FLAGSMITH_TEST_POSTGRES":
            monkeypatch.delenv(name)
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt-home"))
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        spool_dir=tmp_path / "spool",
        secrets=(b"old-secret", SECRET),
        duckdb_path=tmp_path / "warehouse.duckdb",
        state_dir=tmp_path / "state",
        dbt_target_path=tmp_path / "dbt-target",
    )


@pytest.fixture
def app(settings):
    app = create_app(settings, {"TESTING": True})
    yield app
    app.extensions["flagsmith_warehouse"].writer.close()


@pytest.fixture
def client(app):
    return app.test_client()


def _read_only_open(real_open):
    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system")
        return real_open(path, flags, *args)

    return read_only


@pytest.fixture
def read_only_filesystem(monkeypatch):
    """Creating files fails as on a read-only mount (tests run as root, so chmod would not)."""
    monkeypatch.setattr(os, "open", _read_only_open(os.open))


def post(client, body: bytes, signature: str | None, path: str = "/webhooks/flagsmith", **kw):
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Flagsmith-Signature"] = signature
    headers.update(kw.pop("headers", {}))
    return client.post(path, data=body, headers=headers, **kw)
