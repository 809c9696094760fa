"""Connection settings every service shares (environment variables with the ``COACH_`` prefix).

Each component owns a frozen settings class for its own knobs (``TranscriptionSettings``,
``StackSettings``…); this one holds only where the shared infrastructure is. In the local mode the
defaults match what ``coach stack up`` starts; for containers set the ``*_URL``/``*_BOOTSTRAP``/
``*_DSN`` variables (see docker-compose.yml).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PlatformSettings"]


class PlatformSettings(BaseSettings):
    """Where Kafka, Kafka Connect, PostgreSQL, ClickHouse and the state directory are."""

    model_config = SettingsConfigDict(env_prefix="COACH_", frozen=True, extra="ignore")

    home: Path = Field(
        default=Path(".coach"),
        description="COACH_HOME: state, logs, chDB data and local blobs (relative to the working dir)",
    )
    kafka_port: int = Field(default=9092, description="COACH_KAFKA_PORT: local Kafka broker port")
    kafka_bootstrap: str = Field(
        default="",
        description="COACH_KAFKA_BOOTSTRAP: bootstrap servers; default 127.0.0.1:<COACH_KAFKA_PORT>",
    )
    kafka_replication: int = Field(
        default=1, ge=1, description="COACH_KAFKA_REPLICATION: replication factor of created topics"
    )
    connect_port: int = Field(default=8083, description="COACH_CONNECT_PORT: Kafka Connect REST port")
    connect_url: str = Field(default="", description="COACH_CONNECT_URL: Kafka Connect REST URL; default from the port")
    pg_host: str = Field(default="127.0.0.1", description="COACH_PG_HOST: PostgreSQL host")
    pg_port: int = Field(default=5433, description="COACH_PG_PORT: PostgreSQL port")
    pg_user: str = Field(default="coach", description="COACH_PG_USER: PostgreSQL role")
    pg_database: str = Field(default="coach", description="COACH_PG_DATABASE: PostgreSQL database")
    pg_dsn: str = Field(default="", description="COACH_PG_DSN: full libpq DSN; overrides the above")
    clickhouse_url: str = Field(
        default="",
        description="COACH_CLICKHOUSE_URL: 'chdb://<dir>' (embedded) or 'http(s)://host:port'; "
        "default chdb://<COACH_HOME>/chdb",
    )
    clickhouse_database: str = Field(
        default="coach", description="COACH_CLICKHOUSE_DATABASE: ClickHouse database of the analytics tables"
    )

    @cached_property
    def home_dir(self) -> Path:
        """Absolute COACH_HOME (created on first use)."""
        path = self.home.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

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
