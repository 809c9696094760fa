"""Fault drill of the transcription consumer group: a worker killed with SIGKILL in the middle of a batch.

The worker runs as its own process (``python -m coach.cli worker transcription``, batches of 4). Eight uploads go
through the real ingestion app; as soon as the first of their transcripts is on ``speech.transcripts.v1`` the worker
is killed (it is then sending the rest of that batch or transcribing the next one, with offsets not yet committed),
and a fresh worker is started. Delivery is at-least-once, so the drill checks what consumers rely on:

* every submission has a transcript, and deduplicating by ``submission_id`` leaves one per submission whose
  duplicates (the replayed part of the interrupted batch) carry the same text and the same causation id;
* after a clean stop, the consumer group's committed offsets reach the end of every partition of
  ``speech.submissions.v1`` (nothing is left unconsumed or silently skipped);
* no worker process is left behind.

The drill runs twice: with dynamic membership, where the restarted member of the classic group protocol waits for
the killed member's session to expire (librdkafka's ``session.timeout.ms``, 45 s by default) before partitions are
reassigned, and with static membership (``COACH_TRANSCRIPTION_WORKER_GROUP_INSTANCE_ID``, KIP-345), where the
restarted worker takes the killed one's place under the same instance id. Both record ``recovered_s`` (kill → last
transcript); no timing is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from ingestion.app import create_app
from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import SUBMISSIONS, TRANSCRIPTS
from tests.audio_factory import HOTWORDS, JFK
from tests.drills import run_process
from tests.event_reader import read_until

pytestmark = pytest.mark.drill

LEARNERS = 2
UPLOADS_PER_LEARNER = 4
BATCH_MAX_MESSAGES = 4
TIMEOUT_S = 240.0


class TranscriptTail:
    """Follows ``speech.transcripts.v1`` from its current end (records produced after construction only)."""

    def __init__(self, settings: PlatformSettings) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": f"drill-tail-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        partitions = self.consumer.list_topics(TRANSCRIPTS.name, timeout=10).topics[TRANSCRIPTS.name].partitions
        self.assignment = []
        for partition in sorted(partitions):
            _, high = self.consumer.get_watermark_offsets(TopicPartition(TRANSCRIPTS.name, partition), timeout=10)
            self.assignment.append(TopicPartition(TRANSCRIPTS.name, partition, high))
        self.consumer.assign(self.assignment)
        self.records: list[dict[str, Any]] = []

    def poll_until(self, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float) -> None:
        """Poll until ``done(records)``; raises ``TimeoutError`` (with what was seen) after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{TRANSCRIPTS.name}: condition not met in {timeout_s} s; {len(self.records)} seen")
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                try:
                    record = json.loads(msg.value())
                except (ValueError, TypeError, RecursionError):
                    continue  # other tests publish malformed records on purpose
                if isinstance(record, dict) and "submission_id" in record:
                    self.records.append(record)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Read until the position of every partition reaches its current high watermark."""
        ends = {
            tp.partition: self.consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in (TopicPartition(TRANSCRIPTS.name, p.partition) for p in self.assignment)
        }

        started = {tp.partition: tp.offset for tp in self.assignment}

        def caught_up(_: list[dict[str, Any]]) -> bool:
            positions = self.consumer.position([TopicPartition(TRANSCRIPTS.name, p) for p in ends])
            # A partition nothing was fetched from reports an invalid position (< 0): it is still where it was
            # assigned, the high watermark at the start.
            return all(
                (tp.offset if tp.offset >= 0 else started[tp.partition]) >= ends[tp.partition] for tp in positions
            )

        self.poll_until(caught_up, timeout_s)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def tokens(migrated_stack: PlatformSettings) -> list[str]:
    """Bearer tokens of fresh learners (each learner's uploads land on one partition, keyed by user id)."""
    with psycopg.connect(migrated_stack.postgres_dsn, autocommit=True) as conn:
        return [create_api_key(conn, f"drill-{uuid.uuid4().hex[:8]}", "learner") for _ in range(LEARNERS)]


@pytest.fixture
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts transcription worker processes (own process groups); kills whatever is left at the end. With the
    ``membership`` parameter ``"static"`` every worker it starts uses the same group instance id."""
    instance_id = f"drill-{uuid.uuid4().hex[:8]}" if request.param == "static" else ""
    with run_process.transcription_workers(
        tmp_path,
        COACH_TRANSCRIPTION_BATCH_MAX_MESSAGES=str(BATCH_MAX_MESSAGES),
        COACH_TRANSCRIPTION_WORKER_GROUP_INSTANCE_ID=instance_id,
    ) as start:
        yield start


def worker_logs(tmp_path: Path) -> str:
    return run_process.logs_tail(tmp_path, 3000)


@pytest.mark.parametrize("workers", ["dynamic", "static"], indirect=True)
def test_worker_killed_mid_batch_loses_nothing(
    migrated_stack: PlatformSettings,
    tokens: list[str],
    workers: Callable[[], subprocess.Popen[bytes]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    tail = TranscriptTail(migrated_stack)
    try:
        first = workers()
        submission_ids: list[str] = []
        with TestClient(create_app(migrated_stack)) as client:
            for n in range(UPLOADS_PER_LEARNER):
                for token in tokens:
                    clip = JFK if n % 2 == 0 else HOTWORDS
                    response = run_process.upload(client, token, clip)
                    assert response.status_code == 202, response.text
                    submission_ids.append(response.json()["submission_id"])
        ours = set(submission_ids)

        def transcribed(records: list[dict[str, Any]]) -> set[str]:
            return {r["submission_id"] for r in records if r["submission_id"] in ours}

        try:
            tail.poll_until(lambda seen: bool(transcribed(seen)), TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"no transcript from the first worker\n{worker_logs(tmp_path)}")
        os.killpg(first.pid, signal.SIGKILL)  # mid-batch: the rest of this batch and the next are in flight
        assert first.wait(10) == -signal.SIGKILL
        done_before_kill = len(transcribed(tail.records))
        killed_at = time.monotonic()

        second = workers()
        try:
            tail.poll_until(lambda seen: transcribed(seen) == ours, TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"missing transcripts: {ours - transcribed(tail.records)}\n{worker_logs(tmp_path)}")
        recovered_s = time.monotonic() - killed_at
        second.send_signal(signal.SIGTERM)  # finishes its batch, commits the stored offsets, exits
        assert second.wait(60) == 0, worker_logs(tmp_path)
        tail.drain()
    finally:
        tail.close()

    run_process.assert_gone(first, second)
    by_submission = run_process.transcripts_by_submission(tail.records, ours)
    for submission_id, copies in by_submission.items():
        assert copies[0]["payload"]["text"].strip(), f"{submission_id}: empty transcript"
    deduplicated = {sid: copies[0] for sid, copies in by_submission.items()}
    assert len(deduplicated) == len(submission_ids)
    duplicates = sum(len(copies) - 1 for copies in by_submission.values())

    # The group's committed offsets cover every one of our submissions (other tests may leave a backlog of
    # their own messages on the shared topic behind them: the worker was stopped once ours were done).
    committed = run_process.committed_offsets(migrated_stack)
    positions = read_until(
        SUBMISSIONS.name, lambda seen: ours <= {str(r.get("submission_id")) for r in seen}, settings=migrated_stack
    )
    for record in positions:
        # Other drills leave hostile records on the shared topic (a list or an object as submission_id).
        if str(record.get("submission_id")) in ours:
            offset = committed[record["_partition"]][0]
            assert offset > record["_offset"], (
                f"partition {record['_partition']}: committed {offset} does not cover offset {record['_offset']}"
            )

    elapsed = time.monotonic() - started
    record_property("duplicates", duplicates)
    record_property("transcripts_before_kill", done_before_kill)
    record_property("drill_seconds", round(elapsed, 1))
    record_property("recovery_seconds", round(recovered_s, 1))
    print(
        f"\ntranscription drill: {len(ours)} submissions, {done_before_kill} transcribed before SIGKILL, "
        f"{len(tail.records)} transcript events, {duplicates} duplicate(s) after restart, "
        f"committed offsets {committed}; kill to all transcribed {recovered_s:.1f} s, drill {elapsed:.1f} s"
    )
