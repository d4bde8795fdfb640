"""Configuration, read once from the environment (contract.md's variables); flags may override."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

WAREHOUSES = ("duckdb", "postgres")

# A Flagsmith project with a few hundred flags, traits and segments stays far below this; the limit
# only bounds what one request can make a worker hold in memory.
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def project_dir() -> Path:
    """The repository root: the dbt project that `transform` builds."""
    override = os.environ.get("FLAGSMITH_DBT_PROJECT_DIR")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parent.parent


def parse_secrets(raw: str | None) -> tuple[bytes, ...]:
    """Comma-separated secrets, any of which verifies (rotation). Blank entries are ignored."""
    if not raw:
        return ()
    return tuple(part.strip().encode() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    spool_dir: Path = Path("data/spool")
    secrets: tuple[bytes, ...] = ()
    allow_unsigned: bool = False
    warehouse: str = "duckdb"
    duckdb_path: Path = Path("data/warehouse.duckdb")
    state_dir: Path = Path("data/state")
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batch_size: int = 5000
    dbt_target_path: Path | None = None

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        warehouse = env.get("FLAGSMITH_WAREHOUSE", "duckdb").strip().lower() or "duckdb"
        if warehouse not in WAREHOUSES:
            raise ConfigError(
                f"FLAGSMITH_WAREHOUSE must be one of {', '.join(WAREHOUSES)}, not {warehouse!r}"
            )
        spool_dir = Path(env.get("FLAGSMITH_SPOOL_DIR") or "data/spool")
        return cls(
            spool_dir=spool_dir.absolute(),
            secrets=parse_secrets(env.get("FLAGSMITH_WEBHOOK_SECRET")),
            warehouse=warehouse,
            duckdb_path=Path(
                env.get("FLAGSMITH_DUCKDB_PATH") or "data/warehouse.duckdb"
            ).absolute(),
            state_dir=Path(env.get("FLAGSMITH_STATE_DIR") or spool_dir.parent / "state").absolute(),
            max_body_bytes=_positive_int(env, "FLAGSMITH_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            batch_size=_positive_int(env, "FLAGSMITH_LOAD_BATCH_SIZE", 5000),
            dbt_target_path=(
                Path(env["FLAGSMITH_DBT_TARGET_PATH"]).absolute()
                if env.get("FLAGSMITH_DBT_TARGET_PATH")
                else None
            ),
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


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
