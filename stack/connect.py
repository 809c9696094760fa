"""Kafka Connect worker in distributed mode with the Debezium PostgreSQL connector on its plugin path.

Runs ``org.apache.kafka.connect.cli.ConnectDistributed`` from the Maven-resolved jars against the local broker.
Connectors are registered over the REST API (``coach migrate`` does it for Debezium). Secrets stay out of connector
configurations, which the REST API returns to anyone who can reach it: the worker has Kafka's FileConfigProvider
(alias ``file``, restricted to ``<home>/connect`` by its ``allowed.paths``), so a connector's ``database.password``
can be ``${file:<home>/connect/secrets.properties:password}``, resolved only inside the worker. That secrets file
(:data:`SECRETS_FILE_NAME`, mode 0600) is created empty at start and filled by the registration
(``projections.debezium``). References: https://kafka.apache.org/documentation/#connect_running (distributed mode,
internal topics, plugin.path), https://kafka.apache.org/documentation/#config_providers (FileConfigProvider),
https://debezium.io/documentation/reference/stable/connectors/postgresql.html (the connector).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from stack.engine import Engine, PortClaim, require_jars, require_java
from stack.kafka import jvm_options, log4j2_properties
from stack.process import (
    log_header,
    spawn,
    write_pid,
)
from stack.settings import LOOPBACK, StackSettings

#: Main class of ``connect-distributed.sh``.
CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"

# Stable identifiers: the worker group and its internal topics hold the registered connectors, their offsets (how
# far Debezium has read the WAL) and statuses. Renaming any of them makes Connect forget its connectors.
#: Connect cluster (consumer group) id.
CONNECT_GROUP_ID = "coach-connect"
#: Compacted topic with connector and task configurations.
CONFIG_STORAGE_TOPIC = "_coach-connect-configs"
#: Compacted topic with source offsets (Debezium's LSN positions).
OFFSET_STORAGE_TOPIC = "_coach-connect-offsets"
#: Compacted topic with connector and task statuses.
STATUS_STORAGE_TOPIC = "_coach-connect-status"

#: Connector class that must be listed by ``GET /connector-plugins`` for the worker to count as ready.
DEBEZIUM_POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
#: Connect plugin directory (under ``plugin.path``) holding the Debezium connector.
DEBEZIUM_PLUGIN_DIR = "debezium-connector-postgres"

#: Timeout of one REST probe, seconds.
REST_TIMEOUT_S = 5.0

#: Alias of the FileConfigProvider in ``config.providers`` (references read ``${file:<path>:<key>}``).
CONFIG_PROVIDER_ALIAS = "file"
#: Kafka's built-in provider reading keys of a Java properties file.
FILE_CONFIG_PROVIDER = "org.apache.kafka.common.config.provider.FileConfigProvider"
#: The secrets file under ``<home>/connect`` (``projections.debezium.LOCAL_SECRETS_FILE`` names the same file).
SECRETS_FILE_NAME = "secrets.properties"


def get_json(url: str, timeout_s: float = REST_TIMEOUT_S) -> object:
    """GET ``url`` and decode the JSON body.

    Raises:
        urllib.error.URLError, OSError: connection failure or non-2xx status; ValueError: not JSON.
    """
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # http://127.0.0.1 only
        return json.loads(response.read().decode("utf-8"))


class ConnectWorker(Engine):
    """The Kafka Connect distributed worker; its generated config lives in ``<home>/connect``."""

    name = "connect"
    label = "Kafka Connect"

    def __init__(self, settings: StackSettings) -> None:
        super().__init__(settings)
        self.config_path = settings.connect_dir / "connect-distributed.properties"
        self.log4j_path = settings.connect_dir / "log4j2.properties"
        self.secrets_path = settings.connect_dir / SECRETS_FILE_NAME

    @property
    def port(self) -> int:
        """The REST port."""
        return self.settings.connect_port

    def port_claims(self) -> list[PortClaim]:
        """The REST port."""
        return [PortClaim(self.settings.connect_port, "COACH_CONNECT_PORT")]

    def worker_properties(self) -> str:
        """The worker configuration, regenerated on every start from the settings."""
        s = self.settings
        props = {
            "bootstrap.servers": s.bootstrap_servers,
            "group.id": CONNECT_GROUP_ID,
            "config.storage.topic": CONFIG_STORAGE_TOPIC,
            "offset.storage.topic": OFFSET_STORAGE_TOPIC,
            "status.storage.topic": STATUS_STORAGE_TOPIC,
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.partitions": "5",
            "status.storage.partitions": "1",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
            "offset.flush.interval.ms": "5000",
            "listeners": f"http://{LOOPBACK}:{s.connect_port}",
            "rest.advertised.host.name": LOOPBACK,
            "rest.advertised.port": str(s.connect_port),
            "plugin.path": str(s.plugins_dir),
            # Every plugin on the path ships ServiceLoader manifests: skip the slow reflective classpath scan.
            "plugin.discovery": "service_load",
            # Connectors may create their topics (auto topic creation is off on the broker).
            "topic.creation.enable": "true",
            "connector.client.config.override.policy": "All",
            # Secrets by reference: ${file:<path>:<key>} in a connector's config, resolved inside the worker only.
            "config.providers": CONFIG_PROVIDER_ALIAS,
            f"config.providers.{CONFIG_PROVIDER_ALIAS}.class": FILE_CONFIG_PROVIDER,
            f"config.providers.{CONFIG_PROVIDER_ALIAS}.param.allowed.paths": str(s.connect_dir),
        }
        lines = ["# Generated by `coach stack` on every start from COACH_* settings; edits are overwritten."]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def ensure_secrets_file(self) -> None:
        """Create ``<home>/connect/secrets.properties`` (mode 0600, a comment only) when missing, and narrow an
        existing one to 0600; its content (``password=…``) is written by the connector's registration."""
        self.settings.connect_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.secrets_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(
                    "# Secrets of connector configurations (FileConfigProvider); written by `coach migrate`.\n"
                )
        os.chmod(self.secrets_path, 0o600)

    def pid(self) -> int | None:
        """Pid of our worker (its command line names our config file), or ``None``."""
        return self.pid_running(CONNECT_MAIN, str(self.config_path))

    def is_ready(self) -> bool:
        """``GET /connector-plugins`` lists the Debezium PostgreSQL connector and ``GET /connectors`` answers 200
        (the worker has joined its group and read the config topic)."""
        base = self.settings.connect_url
        try:
            plugins = get_json(f"{base}/connector-plugins")
            get_json(f"{base}/connectors")
        except (OSError, ValueError):
            return False
        return isinstance(plugins, list) and any(
            isinstance(p, dict) and p.get("class") == DEBEZIUM_POSTGRES_CONNECTOR for p in plugins
        )

    def check_prerequisites(self) -> None:
        """Java, the Connect jars and the Debezium plugin are present."""
        require_java(self.settings.java_bin)
        require_jars(self.settings.kafka_jars_dir, "connect-runtime-*.jar", "Kafka Connect")
        require_jars(self.settings.plugins_dir / DEBEZIUM_PLUGIN_DIR, "debezium-connector-postgres-*.jar", "Debezium")

    def start(self) -> int:
        """Write the configs (and the secrets file if missing), launch ``ConnectDistributed`` and wait until the
        REST API lists Debezium."""
        self.check_prerequisites()
        s = self.settings
        s.connect_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.worker_properties(), encoding="utf-8")
        self.log4j_path.write_text(log4j2_properties(), encoding="utf-8")
        self.ensure_secrets_file()
        log_header(self.log_path, f"starting Kafka Connect on {s.connect_url}")
        argv = [
            require_java(s.java_bin),
            *jvm_options(s.connect_heap, self.log4j_path, s.logs_dir),
            "-cp",
            str(s.kafka_jars_dir / "*"),
            CONNECT_MAIN,
            str(self.config_path),
        ]
        pid = spawn(argv, log_path=self.log_path, cwd=s.connect_dir, env=os.environ)
        write_pid(self.pid_path, pid)
        self.wait_ready(pid, f"Kafka Connect on {s.connect_url}")
        return pid

    def stop(self) -> bool:
        """SIGTERM the worker's process group (it leaves the group and stops its tasks), SIGKILL after timeout."""
        return self.stop_group()

    def detail(self) -> str:
        """REST URL."""
        return self.settings.connect_url
