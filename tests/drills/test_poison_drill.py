"""Poison drill: hostile messages on every topic the platform consumes, produced while ``coach run`` runs; each
lands in a dead-letter topic with a reason, the platform stays up (also across a restart) and a normal upload
after them completes.

``coach run`` runs as a subprocess as in the restart drill (relative ``COACH_HOME``, own ports, chDB under its
home). Produced straight to ``speech.submissions.v1``, ``speech.transcripts.v1``, ``speech.feedback.v1`` and
``cdc.public.learners``: an empty value, bytes that are not UTF-8, text that is not JSON, ``[`` × 100,000 (the
JSON parser's RecursionError), huge numbers (``1e400`` and a 401-digit integer in envelope fields), wrong types, a
valid event of another topic's type, an unknown ``schema_version`` (on the CDC topic: an unknown ``op``), and on
the submissions topic valid ``SubmissionReceived`` events whose ``file://`` blob is missing or is a directory
inside the blob store.

For each hostile message the drill looks for a :class:`schemas.dead_letter.DeadLetterRecord` on any ``*.dlq``
topic with its ``original_topic``/``original_partition``/``original_offset`` and a non-empty reason, and requires
one from every consumer group that reads that topic (:data:`EXPECTED_GROUPS`; the blob cases only from the
transcription group, since the event itself is valid for the projector). Groups that dead-letter it beyond those are
recorded. Throughout, the process must not exit and both ``/readyz`` must answer 200; then ``coach run`` is stopped
with SIGTERM (exit 0), started again (it re-reads the same topics) and must become ready and stay up, and one
normal upload gets its transcript and feedback in the PostgreSQL read models. The drill prints hostile messages per
topic / dead-lettered per group.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import FEEDBACK, SUBMISSIONS, TRANSCRIPTS, ConsumerGroups
from tests.audio_factory import HOTWORDS
from tests.drills.run_process import RELATIVE_HOME, CoachRun, coach_cli, coach_env, consume_for, free_ports, upload
from tests.projection_fixtures import feedback_generated, submission_received, transcript_created

pytestmark = pytest.mark.drill

LEARNERS_CDC = "cdc.public.learners"
EXPECTED_GROUPS: dict[str, set[str]] = {
    SUBMISSIONS.name: {ConsumerGroups.TRANSCRIPTION, ConsumerGroups.PROJECTOR},
    TRANSCRIPTS.name: {ConsumerGroups.FEEDBACK, ConsumerGroups.PROJECTOR, ConsumerGroups.METRICS_FLOW},
    FEEDBACK.name: {ConsumerGroups.PROJECTOR},
    LEARNERS_CDC: {ConsumerGroups.METRICS_FLOW},
}
"""Consumer groups of ``coach run`` that read each topic (and so must dead-letter its poison)."""
BLOB_CASES = {"blob missing", "blob is a directory"}
DLQ_TIMEOUT_S = 240.0
HUGE_INT = "1" + "0" * 400


def _replace(document: dict[str, Any], path: str, raw: str) -> bytes:
    """``document`` as JSON with the value at dotted ``path`` replaced by the raw JSON text ``raw``."""
    marker = f"__drill_{uuid.uuid4().hex}__"
    node = document
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = marker
    return json.dumps(document).replace(f'"{marker}"', raw).encode()


def _event_cases(valid: Callable[[], dict[str, Any]], wrong_type: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The hostile values shared by the three event topics; ``valid()`` builds a fresh valid event of the topic."""

    def with_fields(**fields: Any) -> bytes:
        document = valid()
        document.update(fields)
        return json.dumps(document).encode()

    return [
        ("empty", b""),
        ("not UTF-8", b"\xff\xfe\xfa not utf-8 \xc3\x28"),
        ("not JSON", b"this is not json {"),
        ("deeply nested", b"[" * 100_000),
        ("huge float 1e400", _replace(valid(), "occurred_at", "1e400")),
        ("huge int 10**400", _replace(valid(), "schema_version", HUGE_INT)),
        ("wrong types", with_fields(user_id=12345, submission_id=["x"], payload="not an object")),
        ("valid event, wrong type", json.dumps(wrong_type).encode()),
        ("unknown schema_version", with_fields(schema_version=99)),
    ]


def _cdc_change(user: str, **overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "before": None,
        "after": {"user_id": user, "display_name": "Poison", "timezone": "Europe/Paris", "cohort": "drill"},
        "source": {"version": "3.0", "connector": "postgresql", "table": "learners", "ts_ms": 1_700_000_000_000},
        "op": "u",
        "ts_ms": 1_700_000_000_000,
    }
    document.update(overrides)
    return document


def _hostile_messages(user: str, blobs: Path) -> dict[str, list[tuple[str, bytes]]]:
    def sub() -> dict[str, Any]:
        return json.loads(submission_received(user).model_dump_json())

    received = submission_received(user)
    transcript = transcript_created(received)
    feedback = feedback_generated(transcript)

    def blob_event(uri: str) -> bytes:
        event = json.loads(submission_received(user).model_dump_json())
        event["payload"]["blob"]["uri"] = uri
        return json.dumps(event).encode()

    (blobs / "00" / "poison-directory").mkdir(parents=True, exist_ok=True)
    missing = (blobs / "ff" / ("f" * 64)).as_uri()
    directory = (blobs / "00" / "poison-directory").as_uri()
    cdc = _cdc_change
    return {
        SUBMISSIONS.name: [
            *_event_cases(sub, json.loads(transcript.model_dump_json())),
            ("blob missing", blob_event(missing)),
            ("blob is a directory", blob_event(directory)),
        ],
        TRANSCRIPTS.name: _event_cases(
            lambda: json.loads(transcript_created(submission_received(user)).model_dump_json()),
            json.loads(received.model_dump_json()),
        ),
        FEEDBACK.name: _event_cases(
            lambda: json.loads(feedback_generated(transcript_created(submission_received(user))).model_dump_json()),
            json.loads(transcript.model_dump_json()),
        ),
        LEARNERS_CDC: [
            ("empty", b""),
            ("not UTF-8", b"\xff\xfe\xfa not utf-8 \xc3\x28"),
            ("not JSON", b"this is not json {"),
            ("deeply nested", b"[" * 100_000),
            ("huge float ts_ms 1e400", _replace(cdc(user), "source.ts_ms", "1e400")),
            ("huge int ts_ms 10**400", _replace(cdc(user), "source.ts_ms", HUGE_INT)),
            ("ts_ms overflows a datetime", json.dumps(cdc(user, source={"ts_ms": 10**17})).encode()),
            ("wrong types", json.dumps(cdc(user, after={"user_id": 42, "timezone": ["Europe/Paris"]})).encode()),
            ("valid event, wrong type", json.dumps(json.loads(feedback.model_dump_json())).encode()),
            ("unknown op", json.dumps(cdc(user, op="x")).encode()),
        ],
    }


def _produce(bootstrap: str, messages: dict[str, list[tuple[str, bytes]]], user: str) -> list[dict[str, Any]]:
    """Produce every hostile message; returns one dict per message with its coordinates."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.max.bytes": 10_000_000})
    produced: list[dict[str, Any]] = []

    for topic, cases in messages.items():
        key = json.dumps({"user_id": user}).encode() if topic == LEARNERS_CDC else user.encode()
        for case, value in cases:
            entry: dict[str, Any] = {"topic": topic, "case": case}

            def delivered(err: Any, msg: Any, entry: dict[str, Any] = entry) -> None:
                entry["error"] = err
                entry["partition"], entry["offset"] = msg.partition(), msg.offset()

            producer.produce(topic, value=value, key=key, on_delivery=delivered)
            produced.append(entry)
    assert producer.flush(30) == 0
    assert all(e.get("error") is None for e in produced), [e for e in produced if e.get("error")]
    return produced


class DeadLetters:
    """Reads every ``*.dlq`` topic from the beginning; dead letters by (original topic, partition, offset)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"drill-dlq-{uuid.uuid4()}", "enable.auto.commit": False}
        )
        self.assigned: set[tuple[str, int]] = set()
        self.by_origin: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
        self.malformed = 0

    def _assign_new(self) -> None:
        topics = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10).topics
        new = [
            TopicPartition(name, p, 0)
            for name, meta in topics.items()
            if name.endswith(".dlq") or "dead" in name
            for p in meta.partitions
            if (name, p) not in self.assigned
        ]
        if new:
            self.consumer.incremental_assign(new)
            self.assigned |= {(tp.topic, tp.partition) for tp in new}

    def poll(self, seconds: float) -> None:
        self._assign_new()
        for msg in consume_for(self.consumer, seconds, 0.1):
            try:
                record = json.loads(msg.value())
                origin = (record["original_topic"], int(record["original_partition"]), int(record["original_offset"]))
            except (ValueError, TypeError, KeyError, RecursionError):
                self.malformed += 1
                continue
            record["_dlq_topic"] = msg.topic()
            self.by_origin[origin].append(record)

    def groups_of(self, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Consumer group → its first dead letter (with a non-empty reason) of the produced ``entry``."""
        found: dict[str, dict[str, Any]] = {}
        for record in self.by_origin.get((entry["topic"], entry["partition"], entry["offset"]), []):
            if str(record.get("reason") or "").strip():
                found.setdefault(str(record.get("consumer_group")), record)
        return found

    def close(self) -> None:
        self.consumer.close()


def _required(entry: dict[str, Any]) -> set[str]:
    return {ConsumerGroups.TRANSCRIPTION} if entry["case"] in BLOB_CASES else EXPECTED_GROUPS[entry["topic"]]


def _wait_transcript_and_feedback(dsn: str, sid: str, run: CoachRun, timeout_s: float) -> tuple[bool, bool]:
    deadline = time.monotonic() + timeout_s
    transcript = feedback = False
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline and run.alive() and not (transcript and feedback):
            transcript = (
                conn.execute("SELECT 1 FROM transcripts WHERE submission_id = %s", (sid,)).fetchone() is not None
            )
            feedback = conn.execute("SELECT 1 FROM feedback WHERE submission_id = %s", (sid,)).fetchone() is not None
            time.sleep(1)
    return transcript, feedback


def test_hostile_messages_are_dead_lettered_and_the_platform_stays_up(
    migrated_stack: PlatformSettings, tmp_path: Path
) -> None:
    settings = migrated_stack
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    home = workdir / RELATIVE_HOME
    ingestion, api, tmetrics, fmetrics = free_ports(4, start=28100)
    ports = {"ingestion": ingestion, "api": api, "transcription_metrics": tmetrics, "feedback_metrics": fmetrics}
    env = coach_env(ports, {"COACH_FLOWS_EPOCH_INTERVAL_S": "1"})
    migrated = coach_cli("migrate", "--no-topics", "--no-postgres", "--no-cdc", cwd=workdir, env=env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    user = f"poison-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        token = create_api_key(conn, user, "learner")
        conn.execute(
            "INSERT INTO learners (user_id, display_name, timezone, cohort) VALUES (%s, 'P', 'Europe/Paris', 'drill')",
            (user,),
        )

    problems: list[str] = []
    dead = DeadLetters(settings.bootstrap_servers)
    run = CoachRun(workdir, env, ports, tmp_path / "run-1.log")
    second: CoachRun | None = None
    try:
        assert run.wait_ready(240) is not None, f"coach run not ready ({run.last_readyz}):\n{run.log_tail()}"
        messages = _hostile_messages(user, home / "blobs")
        produced = _produce(settings.bootstrap_servers, messages, user)

        not_ready_polls = 0
        deadline = time.monotonic() + DLQ_TIMEOUT_S
        while time.monotonic() < deadline:
            dead.poll(2)
            if not run.alive():
                break
            if not run.ready():
                not_ready_polls += 1
            if all(_required(e) <= set(dead.groups_of(e)) for e in produced):
                break
        if not run.alive():
            problems.append(
                f"coach run exited ({run.proc.returncode}) after the hostile messages: "
                f"{run.log_lines('failed', 'Traceback', 'Error')}"
            )
        if not_ready_polls:
            problems.append(f"/readyz not 200 in {not_ready_polls} polls while the poison was consumed")
        dead.poll(3)

        if run.alive():
            code = run.stop(signal.SIGTERM)
            if code != 0:
                problems.append(f"SIGTERM after the poison: exit {code}: {run.log_lines('failed', 'Traceback')}")
        # a restart re-reads whatever poison lies past the committed positions
        second = CoachRun(workdir, env, ports, tmp_path / "run-2.log")
        if second.wait_ready(240) is None:
            problems.append(
                f"restart after the poison not ready ({second.last_readyz}): {second.log_lines('failed', 'Traceback')}"
            )
        else:
            time.sleep(10)
            dead.poll(2)
            if not second.alive():
                problems.append(
                    f"restart after the poison exited ({second.proc.returncode}): "
                    f"{second.log_lines('failed', 'Traceback', 'Error')}"
                )
            else:
                response = upload(second.ingestion, token, HOTWORDS)
                if response.status_code != 202:
                    problems.append(f"normal upload after the poison answered {response.status_code}: {response.text}")
                else:
                    sid = response.json()["submission_id"]
                    transcript, feedback = _wait_transcript_and_feedback(settings.postgres_dsn, sid, second, 300)
                    if not (transcript and feedback):
                        problems.append(f"normal upload {sid}: transcript {transcript}, feedback {feedback}")
                if not second.ready():
                    problems.append(
                        f"restarted coach run not ready/alive at the end: {second.log_lines('failed', 'Traceback')}"
                    )
        dead.poll(2)
        if second.alive():
            code = second.stop(signal.SIGTERM)
            if code != 0:
                problems.append(f"restarted coach run: SIGTERM exit {code}: {second.log_lines('failed', 'Traceback')}")
        for proc in (run, second):
            if proc is not None:
                assert proc.left_behind() == [], "processes left behind"
    finally:
        run.kill()
        if second is not None:
            second.kill()
        dead.close()

    _print_table(produced, dead)
    for entry in produced:
        missing = _required(entry) - set(dead.groups_of(entry))
        if missing:
            problems.append(
                f"{entry['topic']}[{entry['partition']}]@{entry['offset']} ({entry['case']}): no dead letter from "
                f"{sorted(missing)}"
            )
    assert not problems, "\n".join(problems)


def _print_table(produced: list[dict[str, Any]], dead: DeadLetters) -> None:
    print("\npoison drill: hostile messages per topic / dead-lettered per group")
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in produced:
        by_topic[entry["topic"]].append(entry)
    for topic, entries in by_topic.items():
        groups = sorted(EXPECTED_GROUPS[topic] | {g for e in entries for g in dead.groups_of(e)})
        counts = {g: sum(1 for e in entries if g in dead.groups_of(e)) for g in groups}
        required = {g: sum(1 for e in entries if g in _required(e)) for g in groups}
        summary = ", ".join(f"{g} {counts[g]}/{required[g]}" for g in groups)
        print(f"{topic}: {len(entries)} hostile; dead-lettered by group (got/required): {summary}")
        for e in entries:
            found = dead.groups_of(e)
            detail = "; ".join(
                f"{g}: {r.get('error_class')}: {str(r.get('reason'))[:70]!r}" for g, r in sorted(found.items())
            )
            lacking = sorted(_required(e) - set(found))
            print(
                f"   @{e['partition']}:{e['offset']:<5} {e['case']:<28} "
                f"{'MISSING ' + ','.join(lacking) + ' | ' if lacking else ''}{detail}"
            )
    print(f"(unparseable records on the dlq topics: {dead.malformed})")
