"""How the platform's one consumer loop gathers a batch, against the real broker (``ConsumerLoop.gather``).

* a lone record starts its batch without waiting out the poll timeout (librdkafka's ``consume`` holds what it has
  until it has ``num_messages`` or its timeout passed, so the loop asks for one record at a time);
* with ``batch_idle_ms``, the batch closes once no record has come for that long, long before
  ``batch_max_wait_ms``; records that come closer together are gathered whole;
* ``on_arrival`` sees every record, decoded, in order, before the batch is handed on, and what it raises loses
  nothing.

The generous joins below only guard against a hang (the old loop waited out a 120-s timeout here); they measure
nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from runtime.consumer import ConsumerLoop, LoopSettings, Positions, Received
from runtime.kafka import make_consumer
from runtime.settings import PlatformSettings
from schemas.dead_letter import PoisonMessage

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60


class _Bytes:
    """A handler that keeps each record's bytes."""

    owns_offsets = False

    def decode(self, msg: Message) -> bytes:
        return msg.value() or b""

    def process(self, batch: Sequence[Received[bytes]], positions: Positions) -> list[PoisonMessage | None]:
        return [None] * len(batch)


@pytest.fixture
def topic(local_stack: object) -> Iterator[str]:
    """A fresh one-partition topic on the test stack, deleted afterwards."""
    name = f"test-gather-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": PlatformSettings().bootstrap_servers})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


def _gather_in_thread(loop: ConsumerLoop[bytes], topic: str) -> tuple[threading.Thread, list[list[Message]]]:
    consumer = make_consumer(f"{topic}-group", [topic], loop.platform)
    out: list[list[Message]] = []

    def run() -> None:
        try:
            out.append(loop.gather(consumer).messages)
        finally:
            consumer.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _produce(topic: str, values: Sequence[bytes], gap_s: float = 0.0) -> None:
    producer = Producer({"bootstrap.servers": PlatformSettings().bootstrap_servers})
    for value in values:
        producer.produce(topic, value)
        producer.flush(30)
        time.sleep(gap_s)


def test_a_lone_record_does_not_wait_out_the_poll_timeout(topic: str) -> None:
    settings = LoopSettings(batch_max_messages=16, batch_max_wait_ms=0, poll_timeout_s=120)
    loop = ConsumerLoop(_Bytes(), f"{topic}-group", [topic], settings=settings)
    _produce(topic, [b"alone"])
    thread, out = _gather_in_thread(loop, topic)
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "the batch waited for the poll timeout with a record in hand"
    assert [m.value() for m in out[0]] == [b"alone"]


def test_the_idle_rule_closes_a_burst_and_arrivals_are_seen_first(topic: str) -> None:
    seen: list[bytes] = []

    def arrived(received: Received[bytes]) -> None:
        seen.append(received.value)
        if received.value == b"b":
            raise RuntimeError("a failing hook loses nothing")

    settings = LoopSettings(batch_max_messages=16, batch_max_wait_ms=120_000, batch_idle_ms=3000, poll_timeout_s=120)
    loop = ConsumerLoop(_Bytes(), f"{topic}-group", [topic], settings=settings, on_arrival=arrived)
    thread, out = _gather_in_thread(loop, topic)
    _produce(topic, [b"a", b"b", b"c", b"d"], gap_s=0.3)  # closer together than the idle wait
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "the batch did not close once the records stopped coming"
    assert [m.value() for m in out[0]] == [b"a", b"b", b"c", b"d"]
    assert seen == [b"a", b"b", b"c", b"d"]


def test_a_full_batch_closes_at_once(topic: str) -> None:
    settings = LoopSettings(batch_max_messages=3, batch_max_wait_ms=120_000, poll_timeout_s=120)
    loop = ConsumerLoop(_Bytes(), f"{topic}-group", [topic], settings=settings)
    _produce(topic, [b"1", b"2", b"3", b"4"])
    thread, out = _gather_in_thread(loop, topic)
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive()
    assert [m.value() for m in out[0]] == [b"1", b"2", b"3"]
