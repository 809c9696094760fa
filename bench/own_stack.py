"""The environment of a benchmark that runs a local stack of its own (``python -m stack up`` on its own ports and
``COACH_HOME``), so that it touches neither a developer's stack, the tests' nor another benchmark's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["FOREIGN_ENV_KEYS", "OwnStackSettings", "stack_env", "use_stack_env"]

DEVELOPER_PORTS = {"kafka_port": 9092, "kafka_controller_port": 9093, "connect_port": 8083, "pg_port": 5433}
"""The local stack's default ports (``stack.settings.StackSettings``), which a benchmark's own ports are offset from."""

FOREIGN_ENV_KEYS = (
    "COACH_KAFKA_BOOTSTRAP",
    "COACH_PG_DSN",
    "COACH_CLICKHOUSE_URL",
    "COACH_BLOB_URL",
    "COACH_CONNECT_URL",
    "COACH_DEBEZIUM_DATABASE_PORT",
)
"""Variables that would point the benchmark at another stack (they override the ports); removed by
:func:`use_stack_env`."""


def stack_env(
    home: Path, *, kafka_port: int, kafka_controller_port: int, connect_port: int, pg_port: int
) -> dict[str, str]:
    """The ``COACH_*`` variables that point the stack CLI and every service at the stack under ``home``."""
    return {
        "COACH_HOME": str(home),
        "COACH_KAFKA_PORT": str(kafka_port),
        "COACH_KAFKA_CONTROLLER_PORT": str(kafka_controller_port),
        "COACH_CONNECT_PORT": str(connect_port),
        "COACH_PG_PORT": str(pg_port),
    }


def use_stack_env(env: Mapping[str, str]) -> None:
    """Point this process (and the children it starts) at ``env``'s stack: drop :data:`FOREIGN_ENV_KEYS` from
    ``os.environ``, then set ``env``."""
    for key in FOREIGN_ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(env)


class OwnStackSettings(BaseSettings):
    """Where a benchmark's own stack lives; frozen. A subclass sets its env prefix (``model_config``), ``home``'s
    default and ``PORT_OFFSET``: each engine port not set in the environment (``<prefix>KAFKA_PORT``,
    ``<prefix>KAFKA_CONTROLLER_PORT``, ``<prefix>CONNECT_PORT``, ``<prefix>PG_PORT``) is the developer's
    (:data:`DEVELOPER_PORTS`) plus ``PORT_OFFSET``, so no bench port ends like the developer's or the tests'."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)
    PORT_OFFSET: ClassVar[int]

    home: Path
    """State directory of the bench stack."""
    kafka_port: int
    """Kafka broker port of the bench stack."""
    kafka_controller_port: int
    """KRaft controller port of the bench stack."""
    connect_port: int
    """Kafka Connect REST port of the bench stack."""
    pg_port: int
    """PostgreSQL port of the bench stack."""

    @model_validator(mode="before")
    @classmethod
    def _offset_ports(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, port in DEVELOPER_PORTS.items():
                data.setdefault(name, port + cls.PORT_OFFSET)
        return data

    def stack_env(self) -> dict[str, str]:
        """The ``COACH_*`` variables that point the stack CLI and every service at the bench stack."""
        return stack_env(
            self.home,
            kafka_port=self.kafka_port,
            kafka_controller_port=self.kafka_controller_port,
            connect_port=self.connect_port,
            pg_port=self.pg_port,
        )
