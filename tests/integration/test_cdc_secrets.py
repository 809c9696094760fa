"""The Debezium connector registered with a password (issue 16, item 5): Kafka Connect's REST API and its config
topic never show it while the connector runs; the worker resolves it from ``<COACH_HOME>/connect/secrets.properties``
(mode 0600) through its FileConfigProvider.

The local PostgreSQL uses trust authentication, so it ignores the password; what counts is that the connector gets
to RUNNING with the ``${file:…}`` reference (the worker resolved it) and that the password is nowhere to read.
"""

from __future__ import annotations

import secrets
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from projections.debezium import CONNECTOR_NAME, DebeziumSettings, connector_config, register_connector
from runtime.settings import PlatformSettings
from stack.connect import CONFIG_STORAGE_TOPIC

pytestmark = pytest.mark.integration


@pytest.fixture
def restore_connector(migrated_stack: PlatformSettings) -> Iterator[None]:
    """Put the session's connector configuration back (no password) after the test."""
    yield
    register_connector(migrated_stack)


def _config_topic_values(settings: PlatformSettings) -> bytes:
    """Every value of Connect's config topic, concatenated (connector and task configurations as stored)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-cdc-secrets-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(CONFIG_STORAGE_TOPIC, timeout=10).topics[CONFIG_STORAGE_TOPIC]
        partitions = [TopicPartition(CONFIG_STORAGE_TOPIC, p, 0) for p in metadata.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        consumer.assign(partitions)
        values, done = [], {p for p, end in ends.items() if end == 0}
        while len(done) < len(partitions):
            message = consumer.poll(5.0)
            assert message is not None, "config topic not read to its end"
            partition, offset = message.partition(), message.offset()
            if message.error() is None and partition is not None and offset is not None:
                values.append(message.value() or b"")
                if offset + 1 >= ends[partition]:
                    done.add(partition)
        return b"\n".join(values)
    finally:
        consumer.close()


def test_cdc_connector_password_is_not_readable_over_rest(
    migrated_stack: PlatformSettings, restore_connector: None
) -> None:
    password = f"cdc-{secrets.token_urlsafe(18)}"
    base = migrated_stack
    settings = PlatformSettings(
        pg_dsn=f"postgresql://{base.pg_user}:{password}@{base.pg_host}:{base.pg_port}/{base.pg_database}"
    )
    status = register_connector(settings)
    assert status["connector"]["state"] == "RUNNING" and [t["state"] for t in status["tasks"]] == ["RUNNING"]

    secrets_file = Path(settings.home).resolve() / "connect" / "secrets.properties"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert f"password={password}\n" in secrets_file.read_text()

    rest = settings.connect_rest_url
    with httpx.Client(base_url=rest, timeout=10) as client:
        config = client.get(f"/connectors/{CONNECTOR_NAME}/config").raise_for_status().json()
        assert config["database.password"] == f"${{file:{secrets_file}:password}}"
        assert config == {**connector_config(settings, DebeziumSettings()), "name": CONNECTOR_NAME}
        bodies = {
            path: client.get(path).raise_for_status().text
            for path in (
                f"/connectors/{CONNECTOR_NAME}",
                f"/connectors/{CONNECTOR_NAME}/config",
                f"/connectors/{CONNECTOR_NAME}/tasks",
                f"/connectors/{CONNECTOR_NAME}/status",
                "/connectors?expand=info&expand=status",
            )
        }
    leaking = [path for path, body in bodies.items() if password in body]
    assert not leaking, f"password readable over REST at {leaking}"
    assert password.encode() not in _config_topic_values(settings)  # stored unresolved, tasks included
