"""Fault drill "a broker lost": one broker of a three-broker KRaft cluster killed with SIGKILL under a steady upload
stream, then two of three down.

The cluster is the project's own ``python -m stack up --brokers 3`` on ports and a ``COACH_HOME`` of its own (not the
session stack's): node ``n`` on ``19192 + 2(n-1)`` (controller ``19193 + 2(n-1)``), plus ``COACH_TEST_PORT_OFFSET``.
Topics are migrated with ``COACH_KAFKA_REPLICATION=3`` (so ``min.insync.replicas=2``), and the platform's real
pieces run against it: the ingestion app (in this process, ``TestClient``) and a transcription worker process.

1. ``test_one_broker_killed_mid_stream_loses_nothing``: a thread uploads ``jfk.flac`` at a steady pace; after the
   first accepted uploads the leader of the learners' submissions partition is killed with SIGKILL (``kill -9`` of
   its pid), a few uploads later it is restarted alone (``python -m stack broker start N``). Delivery is
   at-least-once, so the drill checks what consumers rely on: every 202 has exactly one transcript after
   deduplication by ``submission_id``, duplicates carry the same text, no accepted upload is lost. Uploads answered
   503 during the failover are allowed (they carry ``Retry-After``) and counted.
2. ``test_two_brokers_down_answers_503_with_retry_after``: with two brokers killed (``python -m stack broker kill``)
   the in-sync replicas are fewer than ``min.insync.replicas`` (and the controller quorum is lost): ingestion answers
   503 with ``Retry-After`` (within its 10 s producer timeout), never 202; after both are restarted it accepts again.

Counts are printed (``-s``) and recorded as junit properties; no timing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from fastapi.testclient import TestClient
from rich.console import Console

from coach.migrations import run_migrations
from ingestion.app import create_app
from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import SUBMISSIONS, TRANSCRIPTS
from stack.process import group_members, pid_alive, read_pid
from stack.settings import StackSettings
from stack.supervisor import Supervisor
from tests.audio_factory import JFK
from tests.conftest import TEST_STACK_ENV, run_stack_cli, stack_running
from tests.drills.run_process import kill_group, start_coach

pytestmark = pytest.mark.drill

BROKERS = 3
_OFFSET = int(os.environ.get("COACH_TEST_PORT_OFFSET", "0"))
#: The drill's own cluster: ports 100 above the session stack's, a home next to its home.
CLUSTER_ENV: dict[str, str] = {
    "COACH_HOME": f"{TEST_STACK_ENV['COACH_HOME']}-brokers",
    "COACH_KAFKA_PORT": str(19192 + _OFFSET),
    "COACH_KAFKA_CONTROLLER_PORT": str(19193 + _OFFSET),
    "COACH_CONNECT_PORT": str(18183 + _OFFSET),
    "COACH_PG_PORT": str(15533 + _OFFSET),
    "COACH_KAFKA_HEAP": "256m",
    "COACH_CONNECT_HEAP": "384m",
    "COACH_KAFKA_REPLICATION": str(BROKERS),
    "COACH_TRANSCRIPTION_WORKER_METRICS_PORT": "0",
}
LEARNERS = 2
UPLOADS = 12
KILL_AFTER_ACCEPTED = 3
RESTART_AFTER_ATTEMPTS = 4  # uploads attempted while the broker is down, then it is restarted
UPLOAD_PAUSE_S = 0.5
TIMEOUT_S = 300.0


@dataclass
class Cluster:
    """The drill's running cluster: stack settings (ports, home), platform settings and the supervisor view."""

    stack: StackSettings
    platform: PlatformSettings
    supervisor: Supervisor
    env: dict[str, str]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """``python -m stack up --brokers 3`` from a fresh home on the drill's ports, topics and PostgreSQL migrated
    (replication 3); ``down`` at the end, asserting that no engine process is left."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in CLUSTER_ENV.items():
            patch.setenv(key, value)
        for key in ("COACH_PG_DSN", "COACH_CONNECT_URL", "COACH_BLOB_URL"):
            patch.delenv(key, raising=False)
        stack = StackSettings()
        patch.setenv("COACH_KAFKA_BOOTSTRAP", stack.cluster_bootstrap_servers(BROKERS))
        with stack_running(stack, "--brokers", str(BROKERS)):
            platform = PlatformSettings()
            console = Console(record=True, width=200)
            assert run_migrations(console, settings=platform, clickhouse=False, cdc=False), console.export_text()
            yield Cluster(stack, platform, Supervisor(stack), dict(os.environ))
        shutil.rmtree(stack.home, ignore_errors=True)


@pytest.fixture
def tokens(cluster: Cluster) -> list[str]:
    """Bearer tokens of fresh learners."""
    with psycopg.connect(cluster.platform.postgres_dsn, autocommit=True) as conn:
        return [create_api_key(conn, f"broker-drill-{uuid.uuid4().hex[:8]}", "learner") for _ in range(LEARNERS)]


@pytest.fixture
def worker(cluster: Cluster, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One transcription worker process on the cluster (own process group; killed at the end if still running)."""
    env = dict(
        cluster.env,
        COACH_TRANSCRIPTION_BATCH_MAX_MESSAGES="4",
        COACH_TRANSCRIPTION_WORKER_PROCESSES="1",
    )
    env.pop("COACH_CLICKHOUSE_URL", None)  # the worker has no use for the session's chDB directory
    with (tmp_path / "worker.log").open("wb") as log:
        proc = start_coach("worker", "transcription", env=env, log=log)
        try:
            yield proc
        finally:
            kill_group(proc)
            assert group_members(proc.pid) == [], f"processes left in worker group {proc.pid}"


def worker_log(tmp_path: Path) -> str:
    path = tmp_path / "worker.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def read_topic(
    settings: PlatformSettings, topic: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float
) -> list[dict[str, Any]]:
    """Every JSON record of ``topic`` from the beginning (assigned partitions, no group), until ``done(records)``
    and the position of every partition reached its high watermark. Records get ``_partition``.

    Raises:
        TimeoutError: not done within ``timeout_s``.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"drill-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                record = json.loads(msg.value() or b"null")
                record["_partition"] = msg.partition()
                records.append(record)
                continue
            if msg is None and done(records):
                ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
                positions = consumer.position([TopicPartition(topic, p) for p in partitions])
                if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                    return records
        raise TimeoutError(f"{topic}: condition not met in {timeout_s} s; {len(records)} records read")
    finally:
        consumer.close()


def partition_leader(settings: PlatformSettings, topic: str, partition: int) -> int:
    """Node id of the current leader of ``topic``/``partition``."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    return int(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader)


@dataclass
class Outcome:
    """One upload attempt: its tag (sent as ``prompt_id``, to find it on the topic even after a 503), HTTP status,
    submission id (202), Retry-After (503) and how long the answer took (seconds)."""

    tag: str
    status: int
    submission_id: str | None
    retry_after: str | None
    phase: str
    seconds: float


@dataclass
class UploadStream:
    """Uploads ``jfk.flac`` for the learners in turn, one every ``pause_s`` after the previous answer."""

    client: TestClient
    tokens: list[str]
    phase: str = "before kill"
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def upload(self, token: str) -> Outcome:
        """POST one upload; the outcome is appended to :attr:`outcomes`."""
        tag = f"drill-{uuid.uuid4().hex[:12]}"
        began = time.monotonic()
        with JFK.open("rb") as fh:
            response = self.client.post(
                "/v1/submissions",
                files={"audio": (JFK.name, fh, "application/octet-stream")},
                data={"prompt_id": tag},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code in (202, 503), response.text
        body = response.json()
        outcome = Outcome(
            tag,
            response.status_code,
            body.get("submission_id") if response.status_code == 202 else None,
            response.headers.get("Retry-After"),
            self.phase,
            time.monotonic() - began,
        )
        with self.lock:
            self.outcomes.append(outcome)
        return outcome

    def run(self, count: int, pause_s: float) -> None:
        """``count`` uploads, alternating learners."""
        for n in range(count):
            self.upload(self.tokens[n % len(self.tokens)])
            time.sleep(pause_s)

    def count(self, status: int | None = None, phase: str | None = None) -> int:
        """How many outcomes have ``status`` (any when ``None``) in ``phase`` (any when ``None``)."""
        with self.lock:
            return sum(
                1
                for o in self.outcomes
                if (status is None or o.status == status) and (phase is None or o.phase == phase)
            )


def stored_tags(settings: PlatformSettings, tags: set[str]) -> set[str]:
    """Which of ``tags`` (``prompt_id`` of uploads) are on the submissions topic, read once every partition has
    all its replicas in sync again (so the high watermark covers whatever the leader had written)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})

    def in_sync() -> bool:
        partitions = admin.list_topics(SUBMISSIONS.name, timeout=10).topics[SUBMISSIONS.name].partitions
        return all(len(p.isrs) == BROKERS for p in partitions.values())

    wait_for(in_sync, 120, f"all replicas of {SUBMISSIONS.name} back in sync")
    records = read_topic(settings, SUBMISSIONS.name, lambda seen: True, 60)
    return {r["payload"].get("prompt_id") for r in records} & tags


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` every 0.2 s; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_topics_are_replicated_three_times(cluster: Cluster) -> None:
    """Platform topics (min.insync.replicas=2), offsets and Connect's internal topics have 3 replicas."""
    admin = AdminClient({"bootstrap.servers": cluster.platform.bootstrap_servers})
    names = (SUBMISSIONS.name, TRANSCRIPTS.name, "__consumer_offsets", "_coach-connect-configs")
    # The brokers create __consumer_offsets on the first consumer-group request (Connect's, or a worker's), which
    # may come after the cluster is up (CI once listed the topics before it existed): make one, then wait for it.
    probe = Consumer({"bootstrap.servers": cluster.platform.bootstrap_servers, "group.id": f"rf-{uuid.uuid4()}"})
    try:
        probe.committed([TopicPartition(SUBMISSIONS.name, 0)], timeout=30)
    finally:
        probe.close()
    deadline = time.monotonic() + 60
    while True:
        topics = admin.list_topics(timeout=10).topics
        if all(name in topics for name in names) or time.monotonic() > deadline:
            break
        time.sleep(1)
    for name in names:
        assert name in topics, sorted(topics)
        assert all(len(p.replicas) == BROKERS for p in topics[name].partitions.values()), name
    resource = ConfigResource(ConfigResource.Type.TOPIC, SUBMISSIONS.name)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["min.insync.replicas"].value == "2"


def test_one_broker_killed_mid_stream_loses_nothing(
    cluster: Cluster,
    tokens: list[str],
    worker: subprocess.Popen[bytes],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    platform = cluster.platform
    with TestClient(create_app(platform)) as client:
        stream = UploadStream(client, tokens)
        # The first upload, before the stream: it finds the partition of learner 0 (all their uploads go there).
        first = stream.upload(tokens[0])
        assert first.status == 202
        located = read_topic(
            platform, SUBMISSIONS.name, lambda seen: any(r["submission_id"] == first.submission_id for r in seen), 60
        )
        partition = next(r["_partition"] for r in located if r["submission_id"] == first.submission_id)
        victim = partition_leader(platform, SUBMISSIONS.name, partition)

        thread = threading.Thread(target=stream.run, args=(UPLOADS - 1, UPLOAD_PAUSE_S), daemon=True)
        thread.start()
        wait_for(lambda: stream.count(202) >= KILL_AFTER_ACCEPTED, 120, "the first accepted uploads")
        pid = read_pid(cluster.supervisor.broker(victim).pid_path)
        assert pid is not None and pid_alive(pid)
        stream.phase = "broker down"
        os.killpg(pid, signal.SIGKILL)  # kill -9 of the partition leader's JVM, mid-stream
        killed_at = time.monotonic()
        wait_for(lambda: not pid_alive(pid), 10, f"broker {victim} (pid {pid}) to die")
        wait_for(lambda: stream.count(phase="broker down") >= RESTART_AFTER_ATTEMPTS, 180, "uploads during the outage")
        restarted = run_stack_cli("broker", "start", str(victim), env=cluster.env)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        stream.phase = "after restart"
        thread.join(300)
        assert not thread.is_alive()

    accepted = [o.submission_id for o in stream.outcomes if o.status == 202 and o.submission_id]
    rejected = [o for o in stream.outcomes if o.status == 503]
    assert all(o.retry_after for o in rejected), "every 503 needs Retry-After"
    ours = set(accepted)
    assert len(ours) == len(accepted)

    try:
        transcripts = read_topic(
            platform, TRANSCRIPTS.name, lambda seen: ours <= {r.get("submission_id") for r in seen}, TIMEOUT_S
        )
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n--- worker log\n{worker_log(tmp_path)}")
    recovered_s = time.monotonic() - killed_at
    worker.send_signal(signal.SIGTERM)  # finishes its batch, commits, exits
    assert worker.wait(60) == 0, worker_log(tmp_path)
    transcripts = read_topic(platform, TRANSCRIPTS.name, lambda seen: True, 60)  # everything, after the last commit

    by_submission: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in transcripts:
        by_submission[record["submission_id"]].append(record)
    assert ours <= set(by_submission), f"accepted uploads without a transcript: {ours - set(by_submission)}"
    for submission_id in ours:
        texts = {c["payload"]["text"] for c in by_submission[submission_id]}
        assert len(texts) == 1, f"{submission_id}: duplicates disagree: {texts}"
        assert next(iter(texts)).strip(), f"{submission_id}: empty transcript"
    duplicates = sum(len(by_submission[s]) - 1 for s in ours)
    # A 503 means "not acknowledged in time", not "not written": such an upload may still have been stored.
    stored_503 = len(stored_tags(platform, {o.tag for o in rejected})) if rejected else 0

    table = {
        "uploads": len(stream.outcomes),
        "accepted_202": len(accepted),
        "accepted_while_broker_down": stream.count(202, "broker down"),
        "rejected_503": len(rejected),
        "transcribed": len(ours & set(by_submission)),
        "transcript_events": sum(len(by_submission[s]) for s in ours),
        "duplicates": duplicates,
        "lost": len(ours - set(by_submission)),
        "503_stored_anyway": stored_503,
    }
    for key, value in table.items():
        record_property(key, value)
    record_property("kill_to_all_transcribed_s", round(recovered_s, 1))
    slowest = max(o.seconds for o in stream.outcomes)
    print(
        f"\nbroker-loss drill: broker {victim} (leader of {SUBMISSIONS.name}[{partition}]) SIGKILLed after "
        f"{KILL_AFTER_ACCEPTED} accepted uploads, restarted after {RESTART_AFTER_ATTEMPTS} more attempts\n"
        + "\n".join(f"  {key:<28}{value}" for key, value in table.items())
        + f"\n  slowest answer {slowest:.1f} s; kill to all transcribed {recovered_s:.1f} s"
    )


def test_two_brokers_down_answers_503_with_retry_after(
    cluster: Cluster, tokens: list[str], record_property: Callable[[str, object], None]
) -> None:
    down = [2, 3]
    survivors = [n for n in range(1, BROKERS + 1) if n not in down]
    outcomes: list[Outcome] = []
    with TestClient(create_app(cluster.platform)) as client:
        stream = UploadStream(client, tokens, phase="all up")
        assert stream.upload(tokens[0]).status == 202  # the producer knows the cluster before it breaks
        for node in down:
            killed = run_stack_cli("broker", "kill", str(node), env=cluster.env)
            assert killed.returncode == 0, killed.stdout + killed.stderr
        status = run_stack_cli("status", env=cluster.env)
        assert status.returncode != 0
        stream.phase = f"{len(down)} of {BROKERS} down"
        for n in range(2):
            outcome = stream.upload(tokens[n % len(tokens)])
            assert outcome.status == 503, "no 202 without min.insync.replicas in-sync replicas"
            assert outcome.retry_after is not None and int(outcome.retry_after) > 0
            outcomes.append(outcome)
        for node in down:
            started = run_stack_cli("broker", "start", str(node), env=cluster.env)
            assert started.returncode == 0, started.stdout + started.stderr
        assert run_stack_cli("status", env=cluster.env).returncode == 0
        stream.phase = "restarted"
        recovered = None
        for _ in range(6):  # the producer's metadata may lag behind the restart: a 503 or two may come first
            recovered = stream.upload(tokens[0])
            if recovered.status == 202:
                break
        assert recovered is not None and recovered.status == 202, "ingestion does not accept again after restart"

    # Not asserted: the leader may have written a 503'd event that its followers replicate after the restart.
    stored = stored_tags(cluster.platform, {o.tag for o in outcomes})
    record_property("rejected_503_with_two_down", len(outcomes))
    record_property("503_stored_anyway_with_two_down", len(stored))
    print(
        f"\nbroker-loss drill, brokers {down} down (survivor {survivors}): {len(outcomes)} uploads answered 503 "
        f"with Retry-After {[o.retry_after for o in outcomes]} after {[round(o.seconds, 1) for o in outcomes]} s, "
        f"{len(stored)} of them on the topic after the restart; then {stream.count(503, 'restarted')} more 503, "
        "then 202"
    )
