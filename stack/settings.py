"""Settings of the local stack (Kafka broker, Kafka Connect, PostgreSQL), read from ``COACH_*`` environment variables.

Every field can be overridden by an environment variable named ``COACH_<FIELD>`` (case-insensitive), e.g.
``COACH_HOME=/tmp/coach COACH_KAFKA_PORT=19092 coach stack up``. The object is frozen: build a new one to change it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Root of the repository checkout: the parent of the ``stack`` package directory.
REPO_ROOT: Path = Path(__file__).resolve().parent.parent

#: Loopback address every engine binds to and every client uses. IPv4 on purpose: ``localhost`` may resolve to
#: ``::1`` first, and the engines only listen on IPv4, which would make clients try (and log) a refused address.
LOOPBACK = "127.0.0.1"

#: Port distance between consecutive brokers of a local cluster (client and controller ports alike).
BROKER_PORT_STRIDE = 2
#: Largest local cluster ``coach stack up --brokers N`` starts (every node is a KRaft voter).
MAX_BROKERS = 5


class StackSettings(BaseSettings):
    """Where the local engines keep their state, which ports they use and how they are started.

    Paths are resolved to absolute paths when the object is built (relative ones against the current directory,
    except ``jars_dir`` whose default is anchored at the repository root).
    """

    model_config = SettingsConfigDict(env_prefix="COACH_", frozen=True, use_attribute_docstrings=True)

    home: Path = Path(".coach")
    """State directory of the local stack: data of every engine, generated configs, logs and pid files (and the chDB
    directory of other components). Relative paths are resolved against the current directory."""
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    """TCP port of the Kafka broker's PLAINTEXT listener (clients)."""
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    """TCP port of the KRaft controller listener (CONTROLLER)."""
    connect_port: int = Field(default=8083, ge=1, le=65535)
    """TCP port of the Kafka Connect REST API."""
    pg_port: int = Field(default=5433, ge=1, le=65535)
    """TCP port of the private PostgreSQL cluster."""
    pg_user: str = "coach"
    """PostgreSQL superuser created by initdb (trust authentication on loopback)."""
    pg_database: str = "coach"
    """Database created on first start for the projections."""
    pg_bin_dir: Path | None = None
    """Directory holding initdb/pg_ctl. Autodetected when unset: the highest /usr/lib/postgresql/<version>/bin, then
    `pg_config --bindir`, then pg_ctl on PATH."""
    pg_os_user: str | None = None
    """Only used when running as root (PostgreSQL refuses to run as root): the unprivileged OS user that owns the data
    directory and runs initdb/pg_ctl. Default: `postgres` if it exists, else `coach` (created as a system user)."""
    jars_dir: Path = REPO_ROOT / ".deps" / "jars"
    """Maven-resolved jars (stack/maven/pom.xml): `kafka/` is the broker and Connect classpath, `plugins/` the Connect
    plugin.path holding the Debezium PostgreSQL connector."""
    java_bin: str = "java"
    """Java executable (JDK/JRE 17+) used to run the broker and Connect."""
    start_timeout_s: float = Field(default=90.0, gt=0)
    """Seconds to wait for one engine to become ready before giving up."""
    stop_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to wait for one engine to exit after SIGTERM before SIGKILL."""
    kafka_heap: str = Field(default="512m", pattern=r"^[1-9][0-9]*[kKmMgG]?$")
    """JVM heap (-Xmx) of the Kafka broker, e.g. `512m`, `1g`."""
    connect_heap: str = Field(default="512m", pattern=r"^[1-9][0-9]*[kKmMgG]?$")
    """JVM heap (-Xmx) of the Kafka Connect worker."""

    @field_validator("home", "jars_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("pg_bin_dir", mode="after")
    @classmethod
    def _absolute_optional(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    # --- client-facing addresses ---------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """Kafka ``bootstrap.servers`` of broker 1 for clients, e.g. ``127.0.0.1:9092`` (the whole single-broker
        stack; see :meth:`cluster_bootstrap_servers` for a cluster)."""
        return f"{LOOPBACK}:{self.kafka_port}"

    def broker_port(self, index: int) -> int:
        """PLAINTEXT (client) port of the broker at 0-based ``index``: ``COACH_KAFKA_PORT + 2 * index``.

        The stride is 2 so that the default ports (client 9092, controller 9093) interleave without colliding:
        brokers 1-3 listen on 9092/9094/9096 and their controllers on 9093/9095/9097.
        """
        return self.kafka_port + BROKER_PORT_STRIDE * index

    def controller_port(self, index: int) -> int:
        """KRaft CONTROLLER port of the node at 0-based ``index``: ``COACH_KAFKA_CONTROLLER_PORT + 2 * index``."""
        return self.kafka_controller_port + BROKER_PORT_STRIDE * index

    def cluster_bootstrap_servers(self, brokers: int) -> str:
        """``bootstrap.servers`` listing all ``brokers`` brokers, e.g. ``127.0.0.1:9092,127.0.0.1:9094,…``."""
        return ",".join(f"{LOOPBACK}:{self.broker_port(i)}" for i in range(brokers))

    @property
    def connect_url(self) -> str:
        """Base URL of the Kafka Connect REST API, e.g. ``http://127.0.0.1:8083``."""
        return f"http://{LOOPBACK}:{self.connect_port}"

    @property
    def pg_host(self) -> str:
        """Host name clients (and the Debezium connector) use to reach PostgreSQL."""
        return LOOPBACK

    @property
    def pg_dsn(self) -> str:
        """libpq URI of the projections database, e.g. ``postgresql://coach@127.0.0.1:5433/coach``."""
        return f"postgresql://{self.pg_user}@{LOOPBACK}:{self.pg_port}/{self.pg_database}"

    # --- state layout --------------------------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        """``<home>/logs``: one ``<engine>.log`` per engine."""
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        """``<home>/run``: one ``<engine>.pid`` per engine."""
        return self.home / "run"

    @property
    def kafka_dir(self) -> Path:
        """``<home>/kafka``: generated config of broker 1; ``data/`` is its KRaft log directory (brokers 2… of a
        cluster use ``<home>/kafka-2``…)."""
        return self.home / "kafka"

    @property
    def state_path(self) -> Path:
        """``<home>/stack.json``: what ``up`` remembers for later commands (broker count, KRaft cluster id)."""
        return self.home / "stack.json"

    @property
    def connect_dir(self) -> Path:
        """``<home>/connect``: generated Connect worker config."""
        return self.home / "connect"

    @property
    def postgres_dir(self) -> Path:
        """``<home>/postgres``: ``data/`` is the cluster's data directory."""
        return self.home / "postgres"

    @property
    def pg_data_dir(self) -> Path:
        """PostgreSQL data directory (``PGDATA``)."""
        return self.postgres_dir / "data"

    @property
    def kafka_jars_dir(self) -> Path:
        """Classpath directory of the broker and of Connect."""
        return self.jars_dir / "kafka"

    @property
    def plugins_dir(self) -> Path:
        """Kafka Connect ``plugin.path``."""
        return self.jars_dir / "plugins"
