"""The environment of a benchmark that runs a local stack of its own (``python -m stack up`` on its own ports and
``COACH_HOME``), so that it touches neither a developer's stack, the tests' nor another benchmark's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FOREIGN_ENV_KEYS", "stack_env", "use_stack_env"]

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
