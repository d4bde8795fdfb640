"""Configuration, read once from the environment (the FLAGSMITH_* variables); flags may override."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

WAREHOUSES = ("duckdb", "postgres", "spark")

# The environment key is a label of the user's choosing in the webhook URL; it must fit a path
# segment, a log line and a column.
ENVIRONMENT_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# A Flagsmith project with a few hundred flags, traits and segments stays far below this; the limit
# only bounds what one request can make a worker hold in memory.
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024

DEFAULT_LOADER_DUCKDB_MEMORY = "384MB"
DEFAULT_MARTS_SCHEMA = "flagsmith"

# A node is one receiver with its own spool and loader. On a server warehouse several nodes load
# into one database; the id names the node's dlt pipeline there (and its staging schema, should a
# load need one), so it must fit a Postgres identifier after the `flagsmith_raw_staging_` prefix.
NODE_ID = re.compile(r"[a-z0-9_]{1,32}")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def project_dir() -> Path:
    """The repository root: the dbt project that `transform` builds."""
    override = os.environ.get("FLAGSMITH_DBT_PROJECT_DIR")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parent.parent


def parse_secrets(raw: str | None, where: str = "FLAGSMITH_WEBHOOK_SECRET") -> tuple[bytes, ...]:
    """Comma-separated secrets, any of which verifies (rotation).

    Unset or blank means none. A blank entry in a list (`a,,b`, `a,`) is refused rather than
    skipped: it is a typo in a security setting, and an empty secret must never verify anything.
    """
    if raw is None or not raw.strip():
        return ()
    parts = [part.strip() for part in raw.split(",")]
    if any(not part for part in parts):
        raise ConfigError(f"{where} has an empty secret in its comma-separated list")
    return tuple(part.encode() for part in parts)


def read_secrets_file(path: Path) -> dict[str, tuple[bytes, ...]]:
    """Per-environment secrets: one `environment_key = secret[, secret...]` per line.

    `#` starts a comment line. The file is read when a receiver worker starts, so a rotation is
    an edit of the file followed by a graceful reload (SIGHUP to gunicorn), never a restart that
    drops requests. It holds secrets: keep it readable by the receiver's user only.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"cannot read FLAGSMITH_WEBHOOK_SECRETS_FILE {path}: {error.strerror}"
        ) from None
    secrets: dict[str, tuple[bytes, ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        key = key.strip()
        where = f"{path}, line {number}"
        if not separator or not ENVIRONMENT_KEY.fullmatch(key):
            raise ConfigError(
                f"{where}: expected `environment_key = secret[, secret]` with a key of "
                "[A-Za-z0-9_.:-] (up to 128 characters)"
            )
        if key in secrets:
            raise ConfigError(f"{where}: environment key {key!r} is listed twice")
        parsed = parse_secrets(value, where)
        if not parsed:
            raise ConfigError(f"{where}: no secret for environment key {key!r}")
        secrets[key] = parsed
    return secrets


@dataclass(frozen=True)
class Settings:
    spool_dir: Path = Path("data/spool")
    secrets: tuple[bytes, ...] = ()
    environment_secrets: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    allow_unsigned: bool = False
    warehouse: str = "duckdb"
    duckdb_path: Path = Path("data/warehouse.duckdb")
    state_dir: Path = Path("data/state")
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batch_size: int = 1000
    commit_size: int = 20000
    # DuckDB's memory limit inside the loader (its buffer pool would otherwise grow with the file).
    loader_duckdb_memory: str = DEFAULT_LOADER_DUCKDB_MEMORY
    # The schema dbt builds staging and the marts in (profiles.yml reads the same variable).
    marts_schema: str = DEFAULT_MARTS_SCHEMA
    dbt_target_path: Path | None = None
    node_id: str | None = None
    # Spark: where dlt lands the raw tables (a folder, or an fsspec URL such as s3://bucket/lake)
    # and Spark's SQL warehouse folder holding the marts.
    lake_dir: str = "data/lake"
    spark_warehouse_dir: Path = Path("data/spark-warehouse")
    # Privacy: the key erasures are recorded by (HMAC of the identity); trait keys kept out of
    # every model, and whether the loader also removes them from the payload before it lands.
    erasure_key: bytes | None = None
    excluded_trait_keys: tuple[str, ...] = ()
    strip_trait_keys: bool = False

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        warehouse = env.get("FLAGSMITH_WAREHOUSE", "duckdb").strip().lower() or "duckdb"
        if warehouse not in WAREHOUSES:
            raise ConfigError(
                f"FLAGSMITH_WAREHOUSE must be one of {', '.join(WAREHOUSES)}, not {warehouse!r}"
            )
        spool_dir = Path(env.get("FLAGSMITH_SPOOL_DIR") or "data/spool")
        excluded = tuple(
            sorted(
                {k.strip() for k in env.get("FLAGSMITH_EXCLUDED_TRAIT_KEYS", "").split(",")} - {""}
            )
        )
        strip = _flag(env, "FLAGSMITH_STRIP_TRAIT_KEYS")
        if strip and not excluded:
            raise ConfigError(
                "FLAGSMITH_STRIP_TRAIT_KEYS is set but FLAGSMITH_EXCLUDED_TRAIT_KEYS names no "
                "trait key: say which traits the loader removes"
            )
        return cls(
            spool_dir=spool_dir.absolute(),
            secrets=parse_secrets(env.get("FLAGSMITH_WEBHOOK_SECRET")),
            environment_secrets=(
                read_secrets_file(Path(env["FLAGSMITH_WEBHOOK_SECRETS_FILE"]))
                if env.get("FLAGSMITH_WEBHOOK_SECRETS_FILE")
                else {}
            ),
            warehouse=warehouse,
            duckdb_path=Path(
                env.get("FLAGSMITH_DUCKDB_PATH") or "data/warehouse.duckdb"
            ).absolute(),
            state_dir=Path(env.get("FLAGSMITH_STATE_DIR") or spool_dir.parent / "state").absolute(),
            max_body_bytes=_positive_int(env, "FLAGSMITH_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            batch_size=_positive_int(env, "FLAGSMITH_LOAD_BATCH_SIZE", 1000),
            commit_size=_positive_int(env, "FLAGSMITH_LOAD_COMMIT_SIZE", 20000),
            loader_duckdb_memory=(
                env.get("FLAGSMITH_LOADER_DUCKDB_MEMORY") or DEFAULT_LOADER_DUCKDB_MEMORY
            ),
            marts_schema=env.get("FLAGSMITH_DBT_SCHEMA") or DEFAULT_MARTS_SCHEMA,
            dbt_target_path=(
                Path(env["FLAGSMITH_DBT_TARGET_PATH"]).absolute()
                if env.get("FLAGSMITH_DBT_TARGET_PATH")
                else None
            ),
            node_id=_node_id(env.get("FLAGSMITH_NODE_ID")),
            lake_dir=_location(env.get("FLAGSMITH_LAKE_DIR") or "data/lake"),
            spark_warehouse_dir=Path(
                env.get("FLAGSMITH_SPARK_WAREHOUSE_DIR") or "data/spark-warehouse"
            ).absolute(),
            erasure_key=(env.get("FLAGSMITH_ERASURE_KEY") or "").encode("utf-8") or None,
            excluded_trait_keys=excluded,
            strip_trait_keys=strip,
        )

    @property
    def node(self) -> str:
        """This node's id: FLAGSMITH_NODE_ID, else one derived from the host and the state dir.

        Stable across runs of one loader (same host, same state dir) and different for two
        loaders on one host (each has its own state dir), so their dlt pipelines never share
        state in a server warehouse.
        """
        if self.node_id:
            return self.node_id
        where = f"{socket.gethostname()}:{self.state_dir.absolute()}"
        return "n" + hashlib.sha256(where.encode()).hexdigest()[:12]

    def secrets_for(self, environment_key: str | None) -> tuple[bytes, ...]:
        """The secrets that verify a delivery to this URL: the environment's own, else global."""
        if environment_key is not None and environment_key in self.environment_secrets:
            return self.environment_secrets[environment_key]
        return self.secrets

    @property
    def has_secrets(self) -> bool:
        return bool(self.secrets or self.environment_secrets)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _flag(env, name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name} must be 1 or 0 (true/false), not {raw!r}")


def _location(raw: str) -> str:
    """A URL as it is (`s3://...`, `file:///...`); a path made absolute."""
    raw = raw.strip()
    if "://" in raw:
        return raw
    return str(Path(raw).absolute())


def _node_id(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    node = raw.strip().lower()
    if not NODE_ID.fullmatch(node):
        raise ConfigError(
            f"FLAGSMITH_NODE_ID must be 1 to 32 letters, digits or underscores, not {raw!r}"
        )
    return node


def postgres_connection_parameters(environ=None) -> dict[str, str]:
    """The Postgres warehouse from libpq's variables, with the defaults profiles.yml uses."""
    env = os.environ if environ is None else environ
    return {
        "host": env.get("PGHOST") or "127.0.0.1",
        "port": env.get("PGPORT") or "5432",
        "user": env.get("PGUSER") or "postgres",
        "password": env.get("PGPASSWORD") or "",
        "dbname": env.get("PGDATABASE") or "postgres",
    }


def _positive_int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")
    return value
