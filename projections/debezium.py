"""Debezium's PostgreSQL connector on Kafka Connect: its configuration, idempotent registration and health.

Change data capture of the read models (``learners``, ``submissions``, ``submission_timeline``, ``transcripts``,
``feedback``) into ``cdc.public.<table>`` topics, so analytics mirrors operational state without dual writes.
Choices (connector reference: https://debezium.io/documentation/reference/stable/connectors/postgresql.html):

* ``plugin.name=pgoutput`` (PostgreSQL's built-in logical decoding output plugin; needs ``wal_level=logical``, set
  by ``coach stack``) reading the publication :data:`PUBLICATION_NAME`, created by the migration
  ``0003_projector_cdc.sql`` over :data:`CAPTURED_TABLES` (``publication.autocreate.mode=filtered`` recreates the
  same one if it is missing), through the named replication slot :data:`SLOT_NAME`. The slot makes PostgreSQL keep
  WAL until Debezium confirmed it, so a stopped Connect or a restarted PostgreSQL loses no change: Debezium resumes
  from the slot. The price is disk: :func:`replication_slot_lag_bytes` shows how much WAL the slot holds back.
* ``heartbeat.interval.ms`` + ``heartbeat.action.query`` upsert ``debezium_heartbeat`` (a captured table): when the
  captured tables are idle but the database is not (the projector's bookkeeping tables are not captured), the
  heartbeat gives Debezium a captured change to confirm, so the slot's ``confirmed_flush_lsn`` keeps advancing.
* JSON converter **without schemas** (``schemas.enable=false``): each message is the plain change event
  ``{"before", "after", "source", "op", "ts_ms", …}`` and the key the primary key object (``{"user_id": "u1"}``).
  Consumers are Python (Bytewax flows, tests) that read JSON, and the columns' types are defined by our own
  migrations; embedding the Connect schema in every message would multiply its size for no reader. Consequences:
  ``timestamptz`` columns arrive as ISO-8601 strings (Debezium ``ZonedTimestamp``), ``uuid`` as strings, ``jsonb``
  as a JSON *string* (``io.debezium.data.Json``) to be parsed again.
* Before-images: ``learners`` has ``REPLICA IDENTITY FULL`` (migration 0003), so its updates and deletes carry the
  whole previous row; the other tables keep the primary key identity (their before-image holds only the key).
* Topics ``cdc.public.<table>`` (``topic.prefix`` = :data:`schemas.topics.CDC_TOPIC_PREFIX`) are created by Connect
  with 6 partitions (replication factor from ``COACH_KAFKA_REPLICATION``), keyed by the primary key, kept forever
  like the event topics (they are small). ``tombstones.on.delete=false``: the topics are not compacted, so a
  tombstone would only be noise for consumers; a delete is the ``op: "d"`` event.
* ``snapshot.mode=initial``: on first start every existing row is emitted (``op: "r"``), then streaming begins.
* No password in the configuration: Kafka Connect returns a connector's configuration to anyone who can reach its
  REST API (``GET /connectors/<name>/config``). When the role has a password (``COACH_DEBEZIUM_DATABASE_PASSWORD``,
  else the one in ``COACH_PG_DSN``) or a secrets file is named (``COACH_DEBEZIUM_SECRETS_FILE``),
  ``database.password`` is the reference ``${file:<secrets file>:password}``, which the worker's FileConfigProvider
  (``config.providers=file``, set by ``coach stack`` and docker-compose.yml) resolves when it starts the connector
  and its task, and Connect stores and returns unresolved (KIP-297,
  https://kafka.apache.org/documentation/#connect_configproviders). The file is a Java properties file with the key
  ``password``. By default it is the local stack's ``<COACH_HOME>/connect/secrets.properties``, which
  :func:`register_connector` writes (mode 0600) before registering; a named file belongs to the worker's machine
  (docker-compose.yml mounts it into the Connect container) and is not written.

Delivery is at least once: after a Connect crash, events produced after its last offset flush are produced again.
Consumers deduplicate by ``(source.lsn, table, primary key)`` (:mod:`projections.cdc_dedup`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.redaction import redact_dsn
from runtime.settings import PlatformSettings
from schemas.topics import CDC_TOPIC_PREFIX

__all__ = [
    "CAPTURED_TABLES",
    "CONNECTOR_NAME",
    "ConnectorError",
    "DebeziumSettings",
    "HEARTBEAT_TABLE",
    "LOCAL_SECRETS_FILE",
    "PUBLICATION_NAME",
    "SECRETS_KEY",
    "SLOT_NAME",
    "cdc_status",
    "cdc_topic",
    "connector_config",
    "connector_password",
    "connector_secrets_file",
    "connector_status",
    "register_connector",
    "replication_slot_lag_bytes",
    "write_secrets_file",
]

CONNECTOR_NAME = "coach-postgres-cdc"
"""Kafka Connect connector name. Renaming it creates a new connector that snapshots again."""
SLOT_NAME = "coach_cdc"
"""PostgreSQL logical replication slot of the connector (holds WAL until Debezium confirmed it)."""
PUBLICATION_NAME = "coach_cdc"
"""PostgreSQL publication streamed by pgoutput (migration 0003_projector_cdc.sql)."""
HEARTBEAT_TABLE = "debezium_heartbeat"
"""Table the heartbeat action query upserts; captured so that the slot advances while the read models are idle."""
CAPTURED_TABLES: tuple[str, ...] = (
    "learners",
    "submissions",
    "submission_timeline",
    "transcripts",
    "feedback",
    HEARTBEAT_TABLE,
)
"""Tables in ``public`` whose changes go to ``cdc.public.<table>``."""

POSTGRES_CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
LOCAL_SECRETS_FILE = Path("connect") / "secrets.properties"
"""The local stack's secrets file, relative to COACH_HOME: the one its Connect worker's FileConfigProvider may read
(``stack.connect.SECRETS_FILE_NAME`` under ``<home>/connect``; a test keeps the two equal)."""
SECRETS_KEY = "password"
"""Key of the password in the secrets file."""
CONFIG_PROVIDER = "file"
"""Alias of Kafka's FileConfigProvider in the worker's ``config.providers``."""
HEARTBEAT_QUERY = (
    f"INSERT INTO {HEARTBEAT_TABLE} (id, ts) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts"
)


class ConnectorError(RuntimeError):
    """The connector could not be registered or did not reach RUNNING; ``status`` is the last status seen."""

    def __init__(self, message: str, status: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status


class DebeziumSettings(BaseSettings):
    """How Kafka Connect reaches PostgreSQL and how the connector behaves (``COACH_DEBEZIUM_*``).

    Connect may see PostgreSQL under another name than the Python services do (containers): the ``database_*``
    fields override ``PlatformSettings``' ``pg_host``/``pg_port``/``pg_user``/``pg_database``.
    """

    model_config = SettingsConfigDict(
        env_prefix="COACH_DEBEZIUM_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    database_hostname: str | None = None
    """PostgreSQL host as Kafka Connect sees it; default COACH_PG_HOST"""
    database_port: int | None = None
    """PostgreSQL port as Connect sees it; default COACH_PG_PORT"""
    database_user: str | None = None
    """Role with REPLICATION (or superuser); default COACH_PG_USER"""
    database_password: SecretStr = SecretStr("")
    """Password of that role (default: the one in COACH_PG_DSN; none for trust authentication, the local stack). Kafka
    Connect gets it through a file, never in the connector's configuration"""
    secrets_file: str | None = None
    """Java properties file holding the role's password (key `password`), as the Kafka Connect worker sees it; the
    connector's database.password is a ${file:<it>:password} reference. Default: <COACH_HOME>/connect/secrets.properties
    of the local stack, written on registration; a named file is the worker's to provide"""
    database_dbname: str | None = None
    """Database; default COACH_PG_DATABASE"""
    heartbeat_interval_ms: int = Field(default=10_000, ge=0)
    """Heartbeat period, ms (0 disables it)"""
    topic_partitions: int = Field(default=6, ge=1)
    """Partitions of the cdc.public.<table> topics"""
    snapshot_mode: str = "initial"
    """Debezium snapshot.mode"""
    register_timeout_s: float = Field(default=120.0, gt=0)
    """How long register_connector waits for connector and task to be RUNNING, s"""
    request_timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of one Kafka Connect REST call, s"""


def cdc_topic(table: str, schema: str = "public") -> str:
    """Kafka topic of a captured table's changes, e.g. ``cdc.public.learners``."""
    return f"{CDC_TOPIC_PREFIX}.{schema}.{table}"


def connector_password(settings: PlatformSettings, debezium: DebeziumSettings) -> str:
    """The PostgreSQL password Debezium logs in with: ``COACH_DEBEZIUM_DATABASE_PASSWORD``, else the password of
    ``COACH_PG_DSN`` (URI or keyword form), else ``""`` (trust authentication)."""
    password = debezium.database_password.get_secret_value()
    if password:
        return password
    if settings.pg_dsn:
        try:
            return str(conninfo_to_dict(settings.pg_dsn).get("password") or "")
        except psycopg.ProgrammingError:  # not a DSN psycopg can parse: connecting would fail and say so
            return ""
    return ""


def connector_secrets_file(settings: PlatformSettings, debezium: DebeziumSettings) -> tuple[str, bool]:
    """``(path, local)``: the secrets file as the Connect worker sees it, and whether it is the local stack's
    ``<COACH_HOME>/connect/secrets.properties`` (which :func:`register_connector` writes) rather than a file named
    by ``COACH_DEBEZIUM_SECRETS_FILE``. The local path has its symbolic links resolved, as ``coach stack`` resolves
    COACH_HOME for the worker's ``allowed.paths``."""
    if debezium.secrets_file:
        return debezium.secrets_file, False
    return str(Path(os.path.realpath(settings.home)) / LOCAL_SECRETS_FILE), True


def _properties_value(value: str) -> str:
    """``value`` escaped for the value side of a Java properties line (``java.util.Properties.load``)."""
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    escaped = escaped.replace("\f", "\\f")
    return "\\" + escaped if escaped.startswith(" ") else escaped  # a leading blank would be skipped


def write_secrets_file(path: Path, password: str) -> None:
    """Write the secrets file ``path`` (``password=<escaped password>``, UTF-8) atomically with mode 0600, creating
    its directory (mode 0700) when missing. Unchanged content is not rewritten.

    Raises:
        OSError: the file cannot be written.
    """
    text = (
        "# Written by `coach migrate` (projections.debezium.register_connector); read by Kafka Connect's\n"
        "# FileConfigProvider for the Debezium connector's database.password.\n"
        f"{SECRETS_KEY}={_properties_value(password)}\n"
    )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.read_text(encoding="utf-8") == text:
            os.chmod(path, 0o600)
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def connector_config(
    settings: PlatformSettings | None = None, debezium: DebeziumSettings | None = None
) -> dict[str, str]:
    """The connector's configuration (every value a string, as Kafka Connect's REST API returns them).

    It never holds the password: ``database.password`` is ``${file:<secrets file>:password}`` when a password is
    configured or a secrets file is named (:func:`connector_password`, :func:`connector_secrets_file`), and absent
    otherwise (trust authentication).
    """
    settings = settings or PlatformSettings()
    debezium = debezium or DebeziumSettings()
    config = {
        "connector.class": POSTGRES_CONNECTOR_CLASS,
        "tasks.max": "1",  # the PostgreSQL connector always runs one task (one replication stream per slot)
        "plugin.name": "pgoutput",
        "database.hostname": debezium.database_hostname or settings.pg_host,
        "database.port": str(debezium.database_port or settings.pg_port),
        "database.user": debezium.database_user or settings.pg_user,
        "database.dbname": debezium.database_dbname or settings.pg_database,
        "topic.prefix": CDC_TOPIC_PREFIX,
        "slot.name": SLOT_NAME,
        "publication.name": PUBLICATION_NAME,
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(f"public.{table}" for table in CAPTURED_TABLES),
        "snapshot.mode": debezium.snapshot_mode,
        "heartbeat.interval.ms": str(debezium.heartbeat_interval_ms),
        "heartbeat.action.query": HEARTBEAT_QUERY,
        "tombstones.on.delete": "false",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "topic.creation.default.replication.factor": str(settings.kafka_replication),
        "topic.creation.default.partitions": str(debezium.topic_partitions),
        "topic.creation.default.cleanup.policy": "delete",
        "topic.creation.default.retention.ms": "-1",
    }
    secrets_file, local = connector_secrets_file(settings, debezium)
    if connector_password(settings, debezium) or not local:
        config["database.password"] = f"${{{CONFIG_PROVIDER}:{secrets_file}:{SECRETS_KEY}}}"
    return config


def _client(settings: PlatformSettings, debezium: DebeziumSettings) -> httpx.Client:
    return httpx.Client(base_url=settings.connect_rest_url, timeout=debezium.request_timeout_s)


def _status(client: httpx.Client) -> dict[str, Any] | None:
    response = client.get(f"/connectors/{CONNECTOR_NAME}/status")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    status: dict[str, Any] = response.json()
    return status


def connector_status(
    settings: PlatformSettings | None = None, debezium: DebeziumSettings | None = None
) -> dict[str, Any] | None:
    """Kafka Connect's ``GET /connectors/<name>/status`` (``{"connector": {"state"}, "tasks": [{"id", "state",
    "trace"?}]}``), or ``None`` when the connector is not registered.

    Raises ``httpx.HTTPError`` when Kafka Connect is unreachable or answers an error.
    """
    settings = settings or PlatformSettings()
    debezium = debezium or DebeziumSettings()
    with _client(settings, debezium) as client:
        return _status(client)


def _states(status: dict[str, Any]) -> tuple[str, list[str]]:
    return status.get("connector", {}).get("state", "UNKNOWN"), [t.get("state", "UNKNOWN") for t in status["tasks"]]


def _failure(status: dict[str, Any]) -> str:
    traces = [status.get("connector", {}).get("trace")] + [t.get("trace") for t in status.get("tasks", [])]
    return "\n".join(t for t in traces if t) or "(no trace)"


def register_connector(
    settings: PlatformSettings | None = None, debezium: DebeziumSettings | None = None
) -> dict[str, Any]:
    """Create or update the connector (``PUT /connectors/<name>/config``, idempotent) and wait until the connector
    and its task are RUNNING. With a password and the local stack's secrets file, that file is written first
    (:func:`write_secrets_file`), so the configuration Connect validates and stores refers to it. A FAILED
    connector or task is restarted once (``POST …/restart?includeTasks=true&onlyFailed=true``, e.g. after
    PostgreSQL was down longer than Debezium retries).

    Returns the final status (see :func:`connector_status`).

    Raises:
        ConnectorError: the secrets file could not be written, Connect refused the configuration (its message), the
            connector or task FAILED again (with the task's stack trace), or not RUNNING within
            ``register_timeout_s`` (with the last status).
        httpx.HTTPError: Kafka Connect unreachable.
    """
    settings = settings or PlatformSettings()
    debezium = debezium or DebeziumSettings()
    config = connector_config(settings, debezium)
    password = connector_password(settings, debezium)
    secrets_file, local = connector_secrets_file(settings, debezium)
    if password and local:
        try:
            write_secrets_file(Path(secrets_file), password)
        except OSError as exc:
            raise ConnectorError(f"could not write the connector's secrets file {secrets_file}: {exc}") from exc
    with _client(settings, debezium) as client:
        response = client.put(f"/connectors/{CONNECTOR_NAME}/config", json=config)
        if response.status_code >= 400:
            raise ConnectorError(
                f"Kafka Connect refused the configuration of {CONNECTOR_NAME} "
                f"(HTTP {response.status_code}): {response.text[:2000]}"
            )
        deadline = time.monotonic() + debezium.register_timeout_s
        restarted = False
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = _status(client)
            if last is not None and last.get("tasks"):
                connector_state, task_states = _states(last)
                if connector_state == "RUNNING" and all(state == "RUNNING" for state in task_states):
                    return last
                if "FAILED" in (connector_state, *task_states):
                    if restarted:
                        raise ConnectorError(f"{CONNECTOR_NAME} FAILED:\n{_failure(last)}", last)
                    client.post(
                        f"/connectors/{CONNECTOR_NAME}/restart", params={"includeTasks": "true", "onlyFailed": "true"}
                    ).raise_for_status()
                    restarted = True
            time.sleep(0.5)
        raise ConnectorError(
            f"{CONNECTOR_NAME} not RUNNING after {debezium.register_timeout_s:.0f} s; last status: {last}", last
        )


def replication_slot_lag_bytes(conn: psycopg.Connection[Any], slot_name: str = SLOT_NAME) -> int | None:
    """Bytes of WAL the slot holds back: ``pg_current_wal_lsn() - confirmed_flush_lsn``; ``None`` when the slot
    does not exist (connector never started) or has confirmed nothing yet."""
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots"
        " WHERE slot_name = %s",
        (slot_name,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def cdc_status(settings: PlatformSettings | None = None, debezium: DebeziumSettings | None = None) -> dict[str, Any]:
    """Health of change data capture for ``coach stack status``; never raises.

    Returns ``{"connector": name, "state": "RUNNING"|"FAILED"|"PAUSED"|"UNASSIGNED"|"NOT_REGISTERED"|"UNREACHABLE",
    "tasks": [states], "trace": first failure trace or None, "slot": name, "slot_active": bool | None,
    "slot_lag_bytes": int | None, "error": str | None}``.
    """
    settings = settings or PlatformSettings()
    debezium = debezium or DebeziumSettings()
    result: dict[str, Any] = {
        "connector": CONNECTOR_NAME,
        "state": "UNREACHABLE",
        "tasks": [],
        "trace": None,
        "slot": SLOT_NAME,
        "slot_active": None,
        "slot_lag_bytes": None,
        "error": None,
    }
    errors = []
    try:
        status = connector_status(settings, debezium)
        if status is None:
            result["state"] = "NOT_REGISTERED"
        else:
            result["state"], result["tasks"] = (
                _states(status)
                if status.get("tasks")
                else (
                    status.get("connector", {}).get("state", "UNKNOWN"),
                    [],
                )
            )
            if "FAILED" in (result["state"], *result["tasks"]):
                result["trace"] = _failure(status)
    except httpx.HTTPError as exc:
        errors.append(f"Kafka Connect at {redact_dsn(settings.connect_rest_url)}: {redact_dsn(str(exc))}")
    try:
        with psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=3) as conn:
            result["slot_lag_bytes"] = replication_slot_lag_bytes(conn)
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (SLOT_NAME,)).fetchone()
            result["slot_active"] = None if row is None else bool(row[0])
    except psycopg.Error as exc:
        errors.append(f"PostgreSQL: {exc}".strip())
    result["error"] = "; ".join(errors) or None
    return result
