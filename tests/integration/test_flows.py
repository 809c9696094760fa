"""The metric dataflow on the real engines: Kafka (local stack) in, embedded chDB out.

Each test has topics of its own (``COACH_FLOWS_TRANSCRIPTS_TOPIC``/``COACH_FLOWS_LEARNERS_TOPIC``), so counts are
exact whatever other tests write to the platform's topics. It runs the dataflow as the operator would, in a
subprocess (``python -m flows …``) against a chDB directory of its own: chDB opens a data directory in one process
only, and killing the dataflow is part of the test. Tables are read back by another subprocess once the dataflow
has exited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from flows.metrics import METRICS_VERSION
from flows.synthetic import synthetic_transcript
from runtime.kafka import EventProducer, ensure_topics
from runtime.settings import PlatformSettings
from schemas.dead_letter import DeadLetterRecord
from schemas.topics import TopicSpec, dlq_of

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)  # a Monday
TIMEOUT_S = 240

DUMP = textwrap.dedent(
    """
    import json, sys
    from runtime.clickhouse import get_clickhouse_client
    prefix, database = sys.argv[1], sys.argv[2]
    client = get_clickhouse_client(database=database)
    skip = {"computed_at", "recorded_at"}
    out = {}
    for table, order in (("submission_metrics", "user_id, submission_id"),
                         ("learner_metrics_windows", "user_id, window_kind, window_start"),
                         ("late_events", "user_id, window_kind, window_start, submission_id")):
        names = [r[0] for r in client.query(f"DESCRIBE TABLE {database}.{table}").result_rows if r[0] not in skip]
        result = client.query(
            f"SELECT {', '.join(names)} FROM {database}.{table} FINAL WHERE startsWith(user_id, {{p:String}}) "
            f"ORDER BY {order}", parameters={"p": prefix})
        out[table] = [dict(zip(names, [v if isinstance(v, (int, float, bool, type(None), list, dict)) else str(v)
                                        for v in row])) for row in result.result_rows]
    print(json.dumps(out, default=str))
    """
)


@dataclass(frozen=True)
class Topics:
    transcripts: str
    learners: str


@pytest.fixture(scope="module")
def platform(local_stack: Any) -> PlatformSettings:
    return PlatformSettings()


@pytest.fixture
def topics(platform: PlatformSettings) -> Topics:
    """Fresh transcripts (3 partitions), dead-letter and learners' CDC topics for one test."""
    name = f"test-flows-{uuid.uuid4().hex[:10]}"
    created = Topics(f"{name}.transcripts", f"{name}.learners")
    specs = [
        TopicSpec(created.transcripts, "user_id", 3, -1),
        TopicSpec(dlq_of(created.transcripts), "original key", 1, -1),
        TopicSpec(created.learners, "user_id", 1, -1),
    ]
    ensure_topics(specs, platform)
    return created


@pytest.fixture
def env(tmp_path: Path, topics: Topics) -> dict[str, str]:
    """Environment of the dataflow subprocesses: the test stack and topics, a chDB directory, small batches."""
    return {
        **os.environ,
        "COACH_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "COACH_FLOWS_TRANSCRIPTS_TOPIC": topics.transcripts,
        "COACH_FLOWS_LEARNERS_TOPIC": topics.learners,
        "COACH_FLOWS_EPOCH_INTERVAL_S": "0.5",
        "COACH_FLOWS_SINK_BATCH_ROWS": "7",
        "COACH_FLOWS_IDLE_POLL_S": "0.05",
        "PYTHONUNBUFFERED": "1",
    }


def run(env: dict[str, str], *args: str, database: str = "coach") -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**env, "COACH_CLICKHOUSE_DATABASE": database},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def migrate(env: dict[str, str], database: str = "coach") -> None:
    """``coach migrate``'s ClickHouse part (the topics are the test's own; PostgreSQL and CDC are not used)."""
    run(env, "-m", "coach.cli", "migrate", "--no-topics", "--no-postgres", "--no-cdc", database=database)


def dump(env: dict[str, str], prefix: str, database: str = "coach") -> dict[str, list[dict[str, Any]]]:
    return json.loads(run(env, "-c", DUMP, prefix, database, database=database).stdout.strip().splitlines()[-1])


def produce_learner(platform: PlatformSettings, topics: Topics, user: str, timezone: str) -> None:
    """A Debezium change event of the learners table (the connector is the projections' part of the stack)."""
    body = {
        "before": None,
        "after": {"user_id": user, "timezone": timezone},
        "op": "c",
        "source": {"ts_ms": 1_577_836_800_000, "table": "learners"},
        "ts_ms": 1_577_836_800_000,
    }
    producer = Producer({"bootstrap.servers": platform.bootstrap_servers})
    producer.produce(topics.learners, key=json.dumps({"user_id": user}).encode(), value=json.dumps(body).encode())
    assert producer.flush(30) == 0


def produce_transcripts(
    platform: PlatformSettings, topics: Topics, events: list[tuple[str, datetime]], seed: int = 0
) -> None:
    producer = EventProducer(platform, client_id="test-flows")
    for user, at in events:
        producer.produce(topics.transcripts, synthetic_transcript(user, at, words=60, seed=seed))
    assert producer.flush(30) == 0


def schedule(users: list[str], days: int) -> list[tuple[str, datetime]]:
    """Two submissions a day per learner, in event-time order."""
    return [(u, START + timedelta(days=d, hours=h)) for d in range(days) for h in (1, 11) for u in users]


def test_transcripts_become_submission_and_window_rows(
    platform: PlatformSettings, topics: Topics, env: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"flows-rows-{uuid.uuid4().hex[:8]}-"
    users = [f"{prefix}{i}" for i in range(3)]
    produce_learner(platform, topics, users[0], "Asia/Tokyo")
    produce_transcripts(platform, topics, schedule(users, 4))
    produce_transcripts(platform, topics, [(users[1], START + timedelta(hours=5))], seed=1)  # late
    bad = Producer({"bootstrap.servers": platform.bootstrap_servers})
    bad.produce(topics.transcripts, key=users[2].encode(), value=b'{"event_type": "TranscriptCreated"}')
    assert bad.flush(30) == 0
    migrate(env)
    run(env, "-m", "flows", "run", "--stop-at-end", "--recovery-dir", str(tmp_path / "recovery"))
    tables = dump(env, prefix)

    submissions = tables["submission_metrics"]
    assert len(submissions) == 3 * 4 * 2 + 1
    assert {r["asr_model"] for r in submissions} == {"faster-whisper/tiny.en"}
    assert {r["metrics_version"] for r in submissions} == {METRICS_VERSION}
    assert all(r["word_count"] > 0 and r["speech_rate_wpm"] > 0 for r in submissions)
    # metrics version 2 columns (migration 0007); the synthetic transcripts carry no hesitation spans
    assert all(r["syllable_count"] >= r["word_count"] and r["speech_rate_sps"] > 0 for r in submissions)
    assert all(r["articulation_rate_sps"] >= r["speech_rate_sps"] for r in submissions)
    assert {r["hesitation_detection"] for r in submissions} == {False}

    windows = tables["learner_metrics_windows"]
    assert {r["metrics_version"] for r in windows} == {METRICS_VERSION}
    assert all(r["speech_rate_sps_avg"] > 0 and r["syllable_count"] > 0 for r in windows)
    assert {r["hesitation_detected_submissions"] for r in windows} == {0}
    assert {r["filled_pauses_per_100_words"] for r in windows} == {None}  # unknown without detection
    assert all(r["asr_models"] == ["faster-whisper/tiny.en"] for r in windows)
    daily = [r for r in windows if r["window_kind"] == "daily"]
    # the live flow emits a window once the watermark (latest submission - 2 h) passes its end: 3 of 4 days
    assert sorted(
        (r["user_id"], r["local_start_date"], r["submissions"]) for r in daily if r["user_id"] != users[0]
    ) == [(u, str((START + timedelta(days=d)).date()), 2) for u in users[1:] for d in range(3)]
    assert {r["timezone"] for r in windows if r["user_id"] != users[0]} == {"UTC"}
    # in Tokyo (UTC+9) 09:00 and 19:00 UTC are 18:00 that day and 04:00 the next: local days start at 15:00 UTC
    tokyo = sorted((r for r in daily if r["user_id"] == users[0]), key=lambda r: r["local_start_date"])
    assert {r["timezone"] for r in tokyo} == {"Asia/Tokyo"}
    assert [(r["local_start_date"], r["submissions"]) for r in tokyo] == [
        ("2024-03-04", 1),
        ("2024-03-05", 2),
        ("2024-03-06", 2),
        ("2024-03-07", 2),
    ]
    assert all("15:00:00" in r["window_start"] for r in tokyo)

    late = tables["late_events"]
    assert len(late) == 9 and {r["user_id"] for r in late} == {users[1]}
    assert sorted({r["window_kind"] for r in late}) == ["daily", "sliding_7d", "weekly"]

    (dead,) = dead_letters(platform, dlq_of(topics.transcripts))
    assert dead.original_key == users[2] and dead.consumer_group == "flows.metrics"
    assert dead.error_class == "ValidationError" and dead.original_topic == topics.transcripts


def dead_letters(platform: PlatformSettings, topic: str) -> list[DeadLetterRecord]:
    consumer = Consumer({"bootstrap.servers": platform.bootstrap_servers, "group.id": f"t-{uuid.uuid4()}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        consumer.assign([TopicPartition(topic, 0, low)])
        found: list[DeadLetterRecord] = []
        deadline = time.monotonic() + 30
        while low + len(found) < high and time.monotonic() < deadline:
            found += [
                DeadLetterRecord.model_validate_json(m.value()) for m in consumer.consume(500, 1.0) if not m.error()
            ]
        return found
    finally:
        consumer.close()


def test_replay_twice_gives_identical_tables(platform: PlatformSettings, topics: Topics, env: dict[str, str]) -> None:
    prefix = f"flows-replay-{uuid.uuid4().hex[:8]}-"
    users = [f"{prefix}{i}" for i in range(3)]
    produce_learner(platform, topics, users[2], "America/New_York")
    produce_transcripts(platform, topics, schedule(users, 3))
    produce_transcripts(platform, topics, [(users[0], START + timedelta(hours=2))], seed=2)  # late
    migrate(env)
    first = run(env, "-m", "flows", "replay", "metrics", "--version", "1")
    assert "swapped in version 1" in first.stdout and "FAILED" not in first.stdout
    after_first = dump(env, prefix)
    second = run(env, "-m", "flows", "replay", "metrics", "--version", "2", "--drop-old")
    assert "swapped in version 2" in second.stdout and "FAILED" not in second.stdout
    after_second = dump(env, prefix)
    assert after_first == after_second
    # a replay closes every window at the end of its input: all 3 days are there
    daily = [r for r in after_first["learner_metrics_windows"] if r["window_kind"] == "daily"]
    assert len(daily) == 3 * 3 and sum(r["submissions"] for r in daily) == 3 * 3 * 2
    assert {r["timezone"] for r in daily if r["user_id"] == users[2]} == {"America/New_York"}
    assert len(after_first["submission_metrics"]) == 3 * 3 * 2 + 1
    assert len(after_first["late_events"]) == 9
    again = subprocess.run(
        [sys.executable, "-m", "flows", "replay", "metrics", "--version", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert again.returncode == 2 and "already swapped" in again.stdout


class FlowProcess:
    """``python -m flows run`` in the background, its log collected line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows", "run", "--log-level", "DEBUG", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def inserted(self, table: str) -> int:
        total = 0
        for line in list(self.lines):
            try:  # the flow logs JSON lines (runtime/logs.py)
                event = str(json.loads(line).get("event", "")) if line.startswith("{") else line.rstrip()
            except ValueError:
                event = line.rstrip()
            if "inserted" in event and event.endswith(f".{table}"):
                total += int(event.split("inserted", 1)[1].split()[0])
        return total

    def wait_for(self, table: str, rows: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while self.inserted(table) < rows:
            assert self.process.poll() is None, "".join(self.lines[-50:])
            assert time.monotonic() < deadline, f"no {rows} rows inserted into {table}:\n" + "".join(self.lines[-50:])
            time.sleep(0.02)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)


@pytest.fixture
def flow_processes() -> Iterator[list[FlowProcess]]:
    started: list[FlowProcess] = []
    yield started
    for flow in started:
        if flow.process.poll() is None:
            flow.kill()


def test_killed_and_resumed_flow_gives_the_same_tables_as_a_clean_run(
    platform: PlatformSettings,
    topics: Topics,
    env: dict[str, str],
    tmp_path: Path,
    flow_processes: list[FlowProcess],
) -> None:
    prefix = f"flows-kill-{uuid.uuid4().hex[:8]}-"
    users = [f"{prefix}{i}" for i in range(4)]
    events = schedule(users, 6)
    first_half, second_half = events[: len(events) // 2], events[len(events) // 2 :]
    produce_transcripts(platform, topics, first_half)
    migrate(env, "resumed")
    migrate(env, "clean")
    resumed_env = {**env, "COACH_CLICKHOUSE_DATABASE": "resumed"}
    recovery = str(tmp_path / "recovery-resumed")

    flow = FlowProcess(resumed_env, "--recovery-dir", recovery)
    flow_processes.append(flow)
    flow.wait_for("submission_metrics", len(first_half))
    produce_transcripts(platform, topics, second_half)
    flow.wait_for("submission_metrics", len(first_half) + 1)  # mid-stream: the second half is being written
    flow.kill()
    assert flow.process.returncode == -signal.SIGKILL

    run(env, "-m", "flows", "run", "--stop-at-end", "--recovery-dir", recovery, database="resumed")
    run(
        env, "-m", "flows", "run", "--stop-at-end", "--recovery-dir", str(tmp_path / "recovery-clean"), database="clean"
    )
    resumed, clean = dump(env, prefix, "resumed"), dump(env, prefix, "clean")
    assert len(clean["submission_metrics"]) == len(events)
    assert len(clean["learner_metrics_windows"]) > 0
    assert resumed == clean, table_differences(resumed, clean)


def table_differences(left: dict[str, list[dict[str, Any]]], right: dict[str, list[dict[str, Any]]]) -> str:
    """What differs between two :func:`dump` results, short enough to read at the end of a CI log: per table, the
    row counts, the rows only one side has, and for rows of the same key the columns that differ (left, right)."""

    def keyed(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        names = ("user_id", "window_kind", "window_start", "submission_id")
        return {tuple(row.get(name) for name in names): row for row in rows}

    lines = []
    for table in sorted(set(left) | set(right)):
        rows_left, rows_right = keyed(left.get(table, [])), keyed(right.get(table, []))
        if rows_left == rows_right:
            continue
        lines.append(f"{table}: {len(rows_left)} rows vs {len(rows_right)}")
        for key in sorted(set(rows_left) | set(rows_right), key=repr):
            a, b = rows_left.get(key), rows_right.get(key)
            if a is None or b is None:
                lines.append(f"  {key} only {'right' if a is None else 'left'}")
            elif changed := {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}:
                lines.append(f"  {key}: {changed}")
    return "\n".join(lines[:40])
