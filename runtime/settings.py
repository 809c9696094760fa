"""Connection settings every service shares (environment variables with the ``COACH_`` prefix).

Each component owns a frozen settings class for its own knobs (``TranscriptionSettings``,
``StackSettings``…); this one holds only where the shared infrastructure is. In the local mode the
defaults match what ``coach stack up`` starts; for containers set the ``*_URL``/``*_BOOTSTRAP``/
``*_DSN`` variables (see docker-compose.yml).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["STATE_PATH_VARIABLES", "PlatformSettings", "absolute_chdb_dsn", "pin_state_paths"]

STATE_PATH_VARIABLES: tuple[str, ...] = (
    "COACH_HOME",
    "COACH_FLOWS_RECOVERY_DIR",
    "COACH_TRANSCRIPTION_CACHE_DIR",
)
"""Environment variables that name a directory of the state (their relative values are resolved by
:func:`pin_state_paths`); ``COACH_CLICKHOUSE_URL`` (``chdb://<dir>``) and ``COACH_BLOB_URL`` (``file:``) too."""


def absolute_chdb_dsn(dsn: str, base: Path | None = None) -> str:
    """``chdb://<dir>`` with ``<dir>`` absolute (relative to ``base``, default the working directory); other DSNs
    unchanged. chDB's engine is opened once per process on one path: a relative one would be resolved against
    whatever the working directory is when some thread first opens it."""
    if not dsn.startswith("chdb://"):
        return dsn
    path = Path(dsn.removeprefix("chdb://")).expanduser()
    return f"chdb://{os.path.abspath((base or Path.cwd()) / path)}"


def pin_state_paths(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Rewrite every state path of the environment as an absolute path, once, before any thread starts.

    ``COACH_HOME`` (set to the absolute default ``<cwd>/.coach`` when unset), the directories of
    :data:`STATE_PATH_VARIABLES`, a ``chdb://`` ``COACH_CLICKHOUSE_URL`` and a ``file:`` ``COACH_BLOB_URL`` with a
    relative path. Every settings object loaded afterwards, in any thread, sees the same absolute paths whatever
    the working directory has become (chDB's start is not guaranteed to leave it alone). Returns what changed.
    """
    env = os.environ if environ is None else environ
    changed: dict[str, str] = {}
    cwd = Path.cwd()
    env.setdefault("COACH_HOME", ".coach")
    for name in STATE_PATH_VARIABLES:
        value = env.get(name)
        if value and not Path(value).expanduser().is_absolute():
            changed[name] = os.path.abspath(cwd / Path(value).expanduser())
    url = env.get("COACH_CLICKHOUSE_URL", "")
    if url.startswith("chdb://") and absolute_chdb_dsn(url, cwd) != url:
        changed["COACH_CLICKHOUSE_URL"] = absolute_chdb_dsn(url, cwd)
    blob = env.get("COACH_BLOB_URL", "")
    if blob.startswith("file:") and not blob.startswith("file:///"):
        changed["COACH_BLOB_URL"] = Path(os.path.abspath(cwd / blob.removeprefix("file:"))).as_uri()
    env.update(changed)
    return changed


class PlatformSettings(BaseSettings):
    """Where Kafka, Kafka Connect, PostgreSQL, ClickHouse and the state directory are."""

    model_config = SettingsConfigDict(env_prefix="COACH_", frozen=True, extra="ignore", use_attribute_docstrings=True)

    home: Path = Path(".coach")
    """state, logs, chDB data and local blobs (a relative path is resolved against the working directory once, when the
    settings load)"""
    kafka_port: int = 9092
    """local Kafka broker port"""
    kafka_bootstrap: str = ""
    """bootstrap servers; default 127.0.0.1:<COACH_KAFKA_PORT>"""
    kafka_replication: int = Field(default=1, ge=1)
    """replication factor of created topics"""
    connect_port: int = 8083
    """Kafka Connect REST port"""
    connect_url: str = ""
    """Kafka Connect REST URL; default from the port"""
    pg_host: str = "127.0.0.1"
    """PostgreSQL host"""
    pg_port: int = 5433
    """PostgreSQL port"""
    pg_user: str = "coach"
    """PostgreSQL role"""
    pg_database: str = "coach"
    """PostgreSQL database"""
    pg_dsn: str = ""
    """full libpq DSN; overrides the above"""
    clickhouse_url: str = ""
    """'chdb://<dir>' (embedded) or 'http(s)://host:port'; default chdb://<COACH_HOME>/chdb"""
    clickhouse_database: str = "coach"
    """ClickHouse database of the analytics tables"""

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return Path(os.path.abspath(value.expanduser()))

    @field_validator("clickhouse_url")
    @classmethod
    def _absolute_chdb(cls, value: str) -> str:
        return absolute_chdb_dsn(value)

    @property
    def home_dir(self) -> Path:
        """COACH_HOME, absolute since the settings loaded (created if missing)."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home

    @property
    def bootstrap_servers(self) -> str:
        """Kafka ``bootstrap.servers``."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_rest_url(self) -> str:
        """Kafka Connect REST base URL, no trailing slash."""
        return (self.connect_url or f"http://127.0.0.1:{self.connect_port}").rstrip("/")

    @property
    def postgres_dsn(self) -> str:
        """libpq connection string for psycopg."""
        if self.pg_dsn:
            return self.pg_dsn
        return f"postgresql://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.pg_database}"

    @property
    def clickhouse_dsn(self) -> str:
        """ClickHouse location: a ``chdb://`` path or an HTTP(S) URL."""
        return self.clickhouse_url or f"chdb://{self.home_dir / 'chdb'}"
