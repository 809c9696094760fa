"""Reads events back from a topic in tests, with a throwaway consumer group (from the earliest offset)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from runtime.settings import PlatformSettings

__all__ = ["read_until"]


def read_until(
    topic: str,
    done: Callable[[list[dict[str, Any]]], bool],
    *,
    timeout_s: float = 120.0,
    settings: PlatformSettings | None = None,
) -> list[dict[str, Any]]:
    """Consume ``topic`` from the beginning, collecting JSON values (with ``_partition``/``_offset``) until
    ``done(collected)`` is true. Raises ``TimeoutError`` with what was seen when it does not happen in time."""
    import json

    settings = settings or PlatformSettings()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                try:
                    value = json.loads(msg.value())
                except (ValueError, RecursionError):  # other tests put hostile records on the topics on purpose
                    value = None
                if not isinstance(value, dict):
                    value = {"_raw": msg.value()}
                value["_partition"], value["_offset"] = msg.partition(), msg.offset()
                value["_key"] = msg.key().decode() if msg.key() else None
                seen.append(value)
            if done(seen):
                return seen
    finally:
        consumer.close()
    raise TimeoutError(f"{topic}: condition not met in {timeout_s} s; saw {len(seen)} records")
