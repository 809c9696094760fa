"""The local stack (`coach stack up|down|status`) runs real engines: Kafka, Kafka Connect with Debezium, PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stack.connect import DEBEZIUM_POSTGRES_CONNECTOR
from stack.settings import StackSettings
from stack.supervisor import Supervisor
from tests.thread_servers import free_port

pytestmark = pytest.mark.integration

StackCli = Callable[..., subprocess.CompletedProcess[str]]


def test_produce_and_consume_on_a_new_topic(local_stack: StackSettings) -> None:
    topic = f"test.stack.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": local_stack.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)

    producer = Producer({"bootstrap.servers": local_stack.bootstrap_servers, "acks": "all"})
    producer.produce(topic, key=b"user-1", value=b'{"hello": "stack"}')
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": local_stack.bootstrap_servers,
            "group.id": f"test-stack-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        message = None
        deadline = time.monotonic() + 60
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(1.0)
            if polled is not None and polled.error() is None:
                message = polled
    finally:
        consumer.close()
    assert message is not None, "no message consumed"
    assert message.key() == b"user-1"
    assert message.value() == b'{"hello": "stack"}'


def test_connect_lists_the_debezium_postgres_connector(local_stack: StackSettings) -> None:
    response = httpx.get(f"{local_stack.connect_url}/connector-plugins", timeout=10)
    response.raise_for_status()
    assert DEBEZIUM_POSTGRES_CONNECTOR in {plugin["class"] for plugin in response.json()}


def test_postgres_is_ready_for_logical_decoding(local_stack: StackSettings) -> None:
    with psycopg.connect(local_stack.pg_dsn) as conn:
        wal_level = conn.execute("SHOW wal_level").fetchone()
        database = conn.execute("SELECT current_database()").fetchone()
    assert wal_level == ("logical",)
    assert database == (local_stack.pg_database,)


def test_up_twice_is_harmless(local_stack: StackSettings, stack_cli: StackCli) -> None:
    before = Supervisor(local_stack).pid_file_pids()
    assert set(before) == {"postgres", "kafka", "connect"}
    result = stack_cli("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already running" in result.stdout
    assert Supervisor(local_stack).pid_file_pids() == before


def test_port_in_use_is_reported_with_its_setting(tmp_path: Path, stack_cli: StackCli) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy_port = int(holder.getsockname()[1])
        env = {
            **os.environ,
            "COACH_HOME": str(tmp_path / "home"),
            "COACH_PG_PORT": str(busy_port),
            "COACH_KAFKA_PORT": str(free_port()),
            "COACH_KAFKA_CONTROLLER_PORT": str(free_port()),
            "COACH_CONNECT_PORT": str(free_port()),
        }
        result = stack_cli("up", env=env)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"port {busy_port} is already in use" in output
    assert "COACH_PG_PORT" in output
    assert not list((tmp_path / "home").glob("run/*.pid")), "nothing may be started"


def test_down_then_status_fails_and_up_brings_it_back(local_stack: StackSettings, stack_cli: StackCli) -> None:
    """Runs last in this module: stops the stack, checks it is really down, and restarts it for later tests."""
    pids = Supervisor(local_stack).pid_file_pids()
    down = stack_cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    status = stack_cli("status")
    assert status.returncode != 0
    assert "stopped" in status.stdout
    assert Supervisor.leftovers(pids) == []
    assert stack_cli("down").returncode == 0, "down must be idempotent"

    up = stack_cli("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert stack_cli("status").returncode == 0
    with psycopg.connect(local_stack.pg_dsn) as conn:  # data survives a restart
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
