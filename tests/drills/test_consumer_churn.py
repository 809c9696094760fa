"""Consumer-group churn drill: two transcription workers run at once, a third joins and is SIGKILLed mid-batch,
all during a steady stream of uploads; every submission ends with exactly one transcript and none is lost.

The workers are processes of their own (``python -m coach.cli worker transcription``, dynamic membership, batches
of two). Uploads go through the real ingestion app in this process (FastAPI TestClient) in a background thread, one
every :data:`UPLOAD_INTERVAL_S` from several learners (``speech.submissions.v1`` is keyed by user id and has six
partitions, so the learners spread over several of them). The sequence:

1. workers 1 and 2 start; the stream starts; both members hold partitions (``describe_consumer_groups``) and
   transcripts come out;
2. worker 3 joins; once it holds partitions and one of its transcripts (a submission on one of its partitions,
   transcribed after it joined) is out while more of its partitions' submissions are still queued, it is killed
   with SIGKILL (mid-batch: the rest of its batch is in flight, offsets not committed);
3. the stream goes on for a few more uploads and stops; the group rebalances (after the killed member's session
   times out) and the two workers finish; they are stopped with SIGTERM (exit 0).

Checks: every accepted upload has a transcript on ``speech.transcripts.v1``; deduplicated by ``submission_id``
there is one per submission, and the duplicates of the replayed batch carry the same text and causation id; the
projector's read model holds one transcript per submission; the group's committed offsets reach the end of every
partition of ``speech.submissions.v1``; no worker process is left. Membership at each step is printed; no timing is
asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient

from ingestion.app import create_app
from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import SUBMISSIONS, TRANSCRIPTS, ConsumerGroups
from tests.audio_factory import HOTWORDS, JFK
from tests.drills import run_process

pytestmark = pytest.mark.drill

LEARNERS = 6
UPLOAD_INTERVAL_S = 1.5
UPLOADS_AFTER_KILL = 4
TIMEOUT_S = 300.0


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts transcription worker processes (own process groups, batches of two, dynamic membership); kills
    whatever is left at the end."""
    with run_process.transcription_workers(
        tmp_path, COACH_TRANSCRIPTION_BATCH_MAX_MESSAGES="2", COACH_TRANSCRIPTION_WORKER_GROUP_INSTANCE_ID=""
    ) as start:
        yield start


def _logs(tmp_path: Path) -> str:
    return run_process.logs_tail(tmp_path, 2500)


def membership(admin: AdminClient) -> dict[int, list[int]]:
    """Worker pid → partitions of ``speech.submissions.v1`` it holds (client id ``transcription-<pid>``)."""
    description = admin.describe_consumer_groups([ConsumerGroups.TRANSCRIPTION])[ConsumerGroups.TRANSCRIPTION].result(
        timeout=10
    )
    members: dict[int, list[int]] = {}
    for member in description.members:
        try:
            pid = int(str(member.client_id).rsplit("-", 1)[-1])
        except ValueError:
            continue
        tps = member.assignment.topic_partitions if member.assignment else []
        members[pid] = sorted(tp.partition for tp in tps if tp.topic == SUBMISSIONS.name)
    return members


class Stream:
    """Uploads one clip every ``UPLOAD_INTERVAL_S`` (round-robin over the learners) until stopped."""

    def __init__(self, settings: PlatformSettings, tokens: list[str]) -> None:
        self.settings, self.tokens = settings, tokens
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="upload-stream", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            with TestClient(create_app(self.settings)) as client:
                n = 0
                while not self.stop.is_set():
                    clip = JFK if n % 5 == 4 else HOTWORDS
                    response = run_process.upload(client, self.tokens[n % len(self.tokens)], clip)
                    if response.status_code == 202:
                        self.accepted.append(response.json()["submission_id"])
                    else:
                        self.refused.append(f"{response.status_code} {response.text[:200]}")
                    n += 1
                    self.stop.wait(UPLOAD_INTERVAL_S)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def wait_for(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.accepted) < count and time.monotonic() < deadline and self.error is None:
            time.sleep(0.2)


def _until(condition: Callable[[], bool], timeout_s: float, poll: Callable[[float], None]) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        poll(0.5)
    return True


def test_group_churn_loses_nothing(
    migrated_stack: PlatformSettings,
    workers: Callable[[], subprocess.Popen[bytes]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    settings = migrated_stack
    partitions = len(
        AdminClient({"bootstrap.servers": settings.bootstrap_servers})
        .list_topics(SUBMISSIONS.name, timeout=10)
        .topics[SUBMISSIONS.name]
        .partitions
    )
    print(f"\n{SUBMISSIONS.name}: {partitions} partitions (registry: {SUBMISSIONS.partitions})")
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        tokens = [create_api_key(conn, f"churn-{uuid.uuid4().hex[:8]}", "learner") for _ in range(LEARNERS)]
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    tail = run_process.TopicTail(settings.bootstrap_servers, [SUBMISSIONS.name, TRANSCRIPTS.name])
    stream = Stream(settings, tokens)
    steps: list[str] = []

    def partition_of() -> dict[str, int]:
        return {
            r["submission_id"]: r["_partition"]
            for r in tail.records
            if r["_topic"] == SUBMISSIONS.name and "submission_id" in r
        }

    def transcripts() -> list[dict[str, Any]]:
        return [r for r in tail.records if r["_topic"] == TRANSCRIPTS.name and "payload" in r]

    def note(text: str) -> None:
        steps.append(f"{len(stream.accepted):>3} accepted, {len({r['submission_id'] for r in transcripts()}):>3} "
                     f"transcribed | {text}")  # fmt: skip

    try:
        first, second = workers(), workers()
        stream.thread.start()
        both = _until(lambda: sum(1 for p in membership(admin).values() if p) == 2, 120, tail.poll)
        assert both, f"two members never both held partitions: {membership(admin)}\n{_logs(tmp_path)}"
        assert _until(lambda: len(transcripts()) >= 2, TIMEOUT_S, tail.poll), _logs(tmp_path)
        note(f"workers 1+2: {membership(admin)}")

        third = workers()
        joined_at = len(tail.records)
        assert _until(lambda: bool(membership(admin).get(third.pid)), 120, tail.poll), (
            f"worker 3 never got partitions: {membership(admin)}\n{_logs(tmp_path)}"
        )
        held = membership(admin)
        note(f"worker 3 joined: {held}")
        mine = set(held[third.pid])

        def third_working() -> bool:
            where = partition_of()
            done_by_third = [
                r
                for r in tail.records[joined_at:]
                if r["_topic"] == TRANSCRIPTS.name and where.get(r.get("submission_id")) in mine
            ]
            transcribed = {r["submission_id"] for r in transcripts()}
            queued = [s for s, p in where.items() if p in mine and s not in transcribed]
            return bool(done_by_third) and bool(queued)

        mid_batch = _until(third_working, 120, tail.poll)
        where = partition_of()
        transcribed = {r["submission_id"] for r in transcripts()}
        pending = sorted(s for s, p in where.items() if p in mine and s not in transcribed)
        os.killpg(third.pid, signal.SIGKILL)
        assert third.wait(10) == -signal.SIGKILL
        note(
            f"worker 3 SIGKILLed {'mid-batch' if mid_batch else '(no transcript of its own seen yet)'}: "
            f"{len(pending)} submission(s) of its partitions {sorted(mine)} not yet transcribed"
        )
        kill_count = len(stream.accepted)
        stream.wait_for(kill_count + UPLOADS_AFTER_KILL)
        stream.stop.set()
        stream.thread.join(60)
        assert stream.error is None, repr(stream.error)
        assert not stream.refused, stream.refused
        ours = set(stream.accepted)
        note(f"stream stopped: {len(ours)} accepted")

        done = _until(lambda: ours <= {r["submission_id"] for r in transcripts()}, TIMEOUT_S, tail.poll)
        missing = ours - {r["submission_id"] for r in transcripts()}
        assert done, f"missing transcripts for {sorted(missing)}; members {membership(admin)}\n{_logs(tmp_path)}"
        note(f"all transcribed: {membership(admin)}")
        for proc in (first, second):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(90) for proc in (first, second)]
        assert codes == [0, 0], f"SIGTERM exit codes {codes}\n{_logs(tmp_path)}"
        tail.poll(3)
    finally:
        stream.stop.set()
        tail.close()

    run_process.assert_gone(first, second, third)
    by_submission = run_process.transcripts_by_submission(transcripts(), ours)
    duplicates = sum(len(c) - 1 for c in by_submission.values())

    committed = run_process.committed_offsets(settings)
    behind = {p: c for p, c in committed.items() if c[0] < c[1] and c[1] > 0}
    assert not behind, f"committed offsets behind the end: {behind}"

    # the projector's read model (in the session stack, no projector runs: skipped when it has no rows)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT submission_id, count(*) FROM transcripts WHERE submission_id = ANY(%s::uuid[]) GROUP BY 1",
            (list(ours),),
        ).fetchall()
    assert all(n == 1 for _, n in rows)

    print("consumer churn drill (accepted / transcribed | step):")
    for step in steps:
        print(f"  {step}")
    used = sorted({p for s, p in partition_of().items() if s in ours})
    print(
        f"{len(ours)} submissions on partitions {used}, {sum(len(c) for c in by_submission.values())} transcript "
        f"events, {duplicates} duplicate(s) (same text and cause), 0 lost; committed offsets {committed}"
    )
    record_property("duplicates", duplicates)
    record_property("submissions", len(ours))
