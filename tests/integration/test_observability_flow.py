"""The observability dataflow mirrors events, dead letters and learner changes into ClickHouse (real broker,
real Debezium, chDB), feeding the Grafana panels; and the consumer-lag sampler writes its samples."""

from __future__ import annotations

import json
import threading
from uuid import uuid4

import psycopg
import pytest
from confluent_kafka import Producer

from flows.observability import rows_of, run_observability_flow, sample_consumer_lag
from flows.records import SourceMessage
from runtime.clickhouse import get_clickhouse_client
from runtime.kafka import EventProducer
from runtime.settings import PlatformSettings
from schemas import FEEDBACK, SUBMISSIONS, SUBMISSIONS_DLQ, TRANSCRIPTS, DeadLetterRecord
from tests.projection_fixtures import feedback_generated, submission_received, transcript_created, wait_for

pytestmark = pytest.mark.integration


def test_rows_of_each_kind_of_record() -> None:
    received = submission_received("obs-unit")
    transcript = transcript_created(received)
    msg = SourceMessage(TRANSCRIPTS.name, 2, 41, b"obs-unit", transcript.model_dump_json().encode())
    tables = [table for table, _ in rows_of(msg)]
    assert tables == ["pipeline_events", "transcription_runs"]
    after = {"user_id": "obs-unit", "display_name": "O", "timezone": "Asia/Tokyo", "cohort": "c1", "coach_id": "k1",
             "updated_at": "2026-11-21T10:00:00.5Z"}  # fmt: skip
    change = {"before": None, "after": after, "op": "c", "ts_ms": 1}
    [(table, row)] = rows_of(SourceMessage("cdc.public.learners", 0, 0, b"k", json.dumps(change).encode()))
    assert table == "learner_profiles" and row[0] == "obs-unit" and row[2] == "Asia/Tokyo" and row[-1] == 0
    assert rows_of(SourceMessage(TRANSCRIPTS.name, 0, 1, None, b"{not json")) == []  # counted, not fatal


def test_flow_mirrors_events_dead_letters_and_learners(migrated_stack: PlatformSettings) -> None:
    settings = migrated_stack
    user = f"obs-{uuid4().hex[:8]}"
    producer = EventProducer(settings, client_id="test-observability")
    received = submission_received(user)
    transcript = transcript_created(received)
    producer.send(SUBMISSIONS.name, received)
    producer.send(TRANSCRIPTS.name, transcript)
    producer.send(FEEDBACK.name, feedback_generated(transcript))
    record = DeadLetterRecord(
        original_topic=SUBMISSIONS.name, original_partition=0, original_offset=0,
        original_value_b64=DeadLetterRecord.encode_value(b"x"), consumer_group="transcription",
        error_class="NoSpeech", reason="no speech detected", user_id=user,
    )  # fmt: skip
    producer.send_dead_letter(SUBMISSIONS_DLQ.name, record)
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    raw.produce(TRANSCRIPTS.name, key=user.encode(), value=b"{malformed")  # must not stop the flow
    raw.flush(10)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO learners (user_id, display_name, timezone, cohort) VALUES (%s, 'Obs', 'Europe/Paris', 'c9')",
            (user,),
        )

    stop = threading.Event()
    thread = threading.Thread(target=run_observability_flow, args=(stop,), kwargs={"platform": settings})
    thread.start()
    client = get_clickhouse_client(settings)
    try:

        def mirrored() -> bool | None:
            events = client.query(
                "SELECT event_type FROM pipeline_events FINAL WHERE user_id = {u:String} ORDER BY event_type",
                parameters={"u": user},
            ).result_rows
            runs = client.query("SELECT count() FROM transcription_runs WHERE user_id = {u:String}",
                                parameters={"u": user}).result_rows[0][0]  # fmt: skip
            dead = client.query("SELECT error_class FROM dead_letters WHERE user_id = {u:String}",
                                parameters={"u": user}).result_rows  # fmt: skip
            profile = client.query("SELECT cohort FROM learner_profiles FINAL WHERE user_id = {u:String}",
                                   parameters={"u": user}).result_rows  # fmt: skip
            done = (
                [e for (e,) in events] == ["FeedbackGenerated", "SubmissionReceived", "TranscriptCreated"]
                and runs == 1 and dead == [("NoSpeech",)] and profile == [("c9",)]
            )  # fmt: skip
            return True if done else None

        wait_for(mirrored, what="observability rows in ClickHouse", timeout_s=120)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()

    lag_stop = threading.Event()
    sampler = threading.Thread(
        target=sample_consumer_lag, args=(lag_stop,), kwargs={"platform": settings, "every_s": 0.5}
    )
    sampler.start()
    try:
        wait_for(
            lambda: client.query("SELECT count() FROM consumer_lag").result_rows[0][0] or None,
            what="consumer_lag samples",
            timeout_s=30,
        )
    finally:
        lag_stop.set()
        sampler.join(timeout=30)
