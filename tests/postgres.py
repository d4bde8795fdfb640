"""A throwaway Postgres database per test, and a connection shaped like DuckDB's for the helpers.

`FLAGSMITH_TEST_POSTGRES=1` (CI: `.ci/run`) makes the Postgres tests required: a server that does
not answer fails them. Without it they run when a server answers at the PG* address (libpq's
variables; default 127.0.0.1:5432, user postgres) and are skipped, with the reason, when none does.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

from loader.config import postgres_connection_parameters

# dbt and the loader run with this session time zone in the Postgres tests: the marts must not
# depend on it (dates are UTC dates; a non-whole-hour offset shifts both the date and the hour).
SESSION_TIME_ZONE = "Asia/Kathmandu"


def required() -> bool:
    return os.environ.get("FLAGSMITH_TEST_POSTGRES", "").strip().lower() in ("1", "true", "yes")


def _server() -> dict[str, str]:
    """Where the tests' databases are created: the PG* variables, on the maintenance database."""
    parameters = postgres_connection_parameters()
    parameters["dbname"] = "postgres"
    return parameters


def _connect_server():
    import psycopg2

    connection = psycopg2.connect(**_server(), connect_timeout=5)
    connection.autocommit = True
    return connection


@pytest.fixture
def postgres_database(monkeypatch) -> Iterator[dict[str, str]]:
    """A new, empty database for this test; yields its PG* environment, dropped afterwards.

    The PG* variables (and PGTZ, see SESSION_TIME_ZONE) are also set in this process, so the
    loader run in-process and dbt subprocesses connect to it.
    """
    try:
        import psycopg2
    except ImportError as error:
        message = f"psycopg2 is not installed ({error}): pip install -e '.[postgres]'"
        if required():
            pytest.fail(message)
        pytest.skip(message)
    where = "{host}:{port} as {user}".format(**_server())
    try:
        admin = _connect_server()
    except psycopg2.OperationalError as error:
        admin, reason = None, str(error).strip()
    if admin is None:  # outside the except block: the report shows the reason, not a traceback
        if required():
            pytest.fail(
                f"FLAGSMITH_TEST_POSTGRES=1 but no Postgres server answers at {where}: {reason}. "
                "Start one (e.g. pg_ctlcluster 15 main start) or set PGHOST, PGPORT, PGUSER, "
                "PGPASSWORD.",
                pytrace=False,
            )
        pytest.skip(
            f"no Postgres server answers at {where} (set FLAGSMITH_TEST_POSTGRES=1 to require one)"
        )
    name = f"flagsmith_test_{uuid.uuid4().hex[:16]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'create database "{name}"')
        environment = {
            "PGHOST": _server()["host"],
            "PGPORT": _server()["port"],
            "PGUSER": _server()["user"],
            "PGPASSWORD": _server()["password"],
            "PGDATABASE": name,
            "PGTZ": SESSION_TIME_ZONE,
        }
        for variable, value in environment.items():
            monkeypatch.setenv(variable, value)
        yield environment
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


class PostgresConnection:
    """Just enough of DuckDB's connection API (execute(sql, params).fetchall()) for the helpers.

    Query parameters are written `?` as for DuckDB. The session is in UTC, like the DuckDB
    connection the helpers open, so timestamps come back in UTC.
    """

    def __init__(self, environment: dict[str, str] | None = None):
        import psycopg2

        self._connection = psycopg2.connect(**postgres_connection_parameters(environment))
        self._connection.autocommit = True
        self._cursor = self._connection.cursor()
        self._cursor.execute("set time zone 'UTC'")

    def execute(self, sql: str, parameters=None) -> PostgresConnection:
        self._cursor.execute(re.sub(r"\?", "%s", sql) if parameters else sql, parameters)
        return self

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall()

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone()

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> PostgresConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
