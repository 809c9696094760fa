"""The projector (events → PostgreSQL read models) and Debezium's change data capture, on the real local stack."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from projections.cli import learners_app
from projections.debezium import CONNECTOR_NAME, cdc_status, cdc_topic, register_connector
from projections.projector import ProjectorSettings, run_projector
from runtime.kafka import EventProducer
from runtime.settings import PlatformSettings
from schemas import DeadLetterRecord, encode_event
from schemas.topics import FEEDBACK, SUBMISSIONS, SUBMISSIONS_DLQ, TRANSCRIPTS, TRANSCRIPTS_DLQ
from tests.projection_fixtures import (
    BASE_TIME,
    Record,
    feedback_generated,
    read_topic,
    scalar,
    submission_received,
    transcript_created,
    user_id,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def projector(projections_platform: PlatformSettings) -> Iterator[None]:
    """The projector running in a thread for the module."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_projector, args=(stop, ProjectorSettings(batch_max_wait_ms=100), projections_platform), daemon=True
    )
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def producer(projections_platform: PlatformSettings) -> EventProducer:
    return EventProducer(projections_platform, client_id="test-projections")


def submission_row(dsn: str, submission_id: Any) -> dict[str, Any] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM submissions WHERE submission_id = %s", (submission_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip([c.name for c in cur.description or ()], row, strict=True))


def wait_for_status(dsn: str, submission_id: Any, status: str, *, what: str) -> dict[str, Any]:
    """The ``submissions`` row of ``submission_id`` once its status is ``status`` (waits as :func:`wait_for`)."""
    return wait_for(lambda: (r := submission_row(dsn, submission_id)) and r["status"] == status and r, what=what)


def changes_of(records: list[Record], column: str, value: str) -> list[dict[str, Any]]:
    """Change events whose after (or before) image has ``column == value``."""
    return [
        r.value
        for r in records
        if r.value
        and ((r.value.get("after") or {}).get(column) == value or (r.value.get("before") or {}).get(column) == value)
    ]


def test_submission_received_produces_a_submissions_row(
    projections_platform: PlatformSettings, projector: None, producer: EventProducer
) -> None:
    event = submission_received(user_id(), prompt_id="intro", recorded_at=BASE_TIME - timedelta(hours=1))
    producer.send(SUBMISSIONS.name, event)

    row = wait_for(
        lambda: submission_row(projections_platform.postgres_dsn, event.submission_id), what="submissions row"
    )
    assert row["status"] == "received"
    assert row["user_id"] == event.user_id
    assert row["prompt_id"] == "intro"
    assert row["received_at"] == event.occurred_at
    assert row["recorded_at"] == BASE_TIME - timedelta(hours=1)
    assert row["blob_uri"] == event.payload.blob.uri
    assert row["duration_s"] == event.payload.duration_s
    timeline = scalar(
        projections_platform.postgres_dsn,
        "SELECT status FROM submission_timeline WHERE event_id = %s",
        (event.event_id,),
    )
    assert timeline == "received"


def test_learner_upsert_is_captured_with_before_and_after_images(projections_platform: PlatformSettings) -> None:
    learner = user_id("learner")
    runner = CliRunner()
    first = runner.invoke(
        learners_app,
        ["upsert", "--user", learner, "--display-name", "Ada", "--timezone", "Europe/Paris", "--native-language", "fr",
         "--target-level", "B2", "--cohort", "c1", "--coach-id", "k1"],
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["cohort"] == "c1"
    second = runner.invoke(learners_app, ["upsert", "--user", learner, "--cohort", "c2"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["display_name"] == "Ada"  # fields not given are kept
    bad = runner.invoke(learners_app, ["upsert", "--user", learner, "--timezone", "Nowhere/City"])
    assert bad.exit_code == 2

    records = read_topic(
        cdc_topic("learners"), lambda rs: len(changes_of(rs, "user_id", learner)) >= 2, settings=projections_platform
    )
    created, updated = changes_of(records, "user_id", learner)
    assert created["op"] == "c" and created["before"] is None
    assert created["after"]["timezone"] == "Europe/Paris" and created["after"]["target_level"] == "B2"
    assert updated["op"] == "u"
    # REPLICA IDENTITY FULL: the whole previous row, not only the key
    assert updated["before"]["cohort"] == "c1" and updated["before"]["display_name"] == "Ada"
    assert updated["after"]["cohort"] == "c2"
    assert updated["source"]["table"] == "learners" and updated["source"]["lsn"] > created["source"]["lsn"]
    key = next(r.key for r in records if r.value is updated)
    assert json.loads(key or b"{}") == {"user_id": learner}


def test_transcript_updates_the_timeline_and_is_captured(
    projections_platform: PlatformSettings, projector: None, producer: EventProducer
) -> None:
    received = submission_received(user_id())
    transcript = transcript_created(received, text="so I went to the market")
    producer.send(SUBMISSIONS.name, received)
    producer.send(TRANSCRIPTS.name, transcript)

    row = wait_for_status(
        projections_platform.postgres_dsn, received.submission_id, "transcribed", what="submission transcribed"
    )
    assert row["transcribed_at"] == transcript.occurred_at and row["asr_model"] == "faster-whisper/tiny.en"
    with psycopg.connect(projections_platform.postgres_dsn, autocommit=True) as conn:
        timeline = conn.execute(
            "SELECT status, at FROM submission_timeline WHERE submission_id = %s ORDER BY at", (received.submission_id,)
        ).fetchall()
        text, words = conn.execute(
            "SELECT text, word_count FROM transcripts WHERE submission_id = %s", (received.submission_id,)
        ).fetchone() or (None, None)
    assert timeline == [("received", received.occurred_at), ("transcribed", transcript.occurred_at)]
    assert (text, words) == ("so I went to the market", 6)

    sid = str(received.submission_id)
    submissions = read_topic(
        cdc_topic("submissions"),
        lambda rs: any(c["after"]["status"] == "transcribed" for c in changes_of(rs, "submission_id", sid)),
        settings=projections_platform,
    )
    assert [c["after"]["status"] for c in changes_of(submissions, "submission_id", sid)][-1] == "transcribed"
    transcripts = read_topic(
        cdc_topic("transcripts"), lambda rs: bool(changes_of(rs, "submission_id", sid)), settings=projections_platform
    )
    (captured,) = changes_of(transcripts, "submission_id", sid)
    assert captured["op"] == "c" and captured["after"]["text"] == "so I went to the market"
    assert json.loads(captured["after"]["words"])[0]["word"] == "so"  # jsonb arrives as a JSON string


def test_out_of_order_and_duplicate_events_converge(
    projections_platform: PlatformSettings, projector: None, producer: EventProducer
) -> None:
    received = submission_received(user_id())
    transcript = transcript_created(received, text="first transcript")
    retried = transcript_created(received, text="a second transcript of the same recording")
    feedback = feedback_generated(transcript)
    for topic, event in [
        (FEEDBACK.name, feedback),  # feedback first: creates the row
        (TRANSCRIPTS.name, transcript),
        (SUBMISSIONS.name, received),
        (TRANSCRIPTS.name, transcript),  # redelivered: same event_id
        (TRANSCRIPTS.name, retried),  # new event_id, same submission: the first one is kept
        (SUBMISSIONS.name, received),
    ]:
        producer.send(topic, event)

    def settled() -> tuple[Any, ...] | None:
        count = scalar(
            projections_platform.postgres_dsn,
            "SELECT count(*) FROM submission_timeline WHERE submission_id = %s",
            (received.submission_id,),
        )
        row = submission_row(projections_platform.postgres_dsn, received.submission_id)
        return (count, row) if count == 3 and row and row["received_at"] else None

    _, row = wait_for(settled, what="three timeline rows and the received fact")
    assert row["status"] == "feedback"  # never moved back to transcribed/received
    assert (row["received_at"], row["transcribed_at"], row["feedback_at"]) == (
        received.occurred_at,
        transcript.occurred_at,
        feedback.occurred_at,
    )
    assert row["duration_s"] == received.payload.duration_s  # the container's, not the decoded one
    assert row["updated_at"] == feedback.occurred_at
    assert (
        scalar(
            projections_platform.postgres_dsn,
            "SELECT text FROM transcripts WHERE submission_id = %s",
            (received.submission_id,),
        )
        == "first transcript"
    )


def test_malformed_event_goes_to_its_dlq_and_the_projector_keeps_going(
    projections_platform: PlatformSettings, projector: None, producer: EventProducer
) -> None:
    learner = user_id()
    broken_json = b'{"event_type": "SubmissionReceived", "user_id": '
    producer._producer.produce(SUBMISSIONS.name, key=learner.encode(), value=broken_json)
    received = submission_received(learner)
    invalid = json.loads(encode_event(transcript_created(received)))
    invalid["payload"]["duration_s"] = 0  # fails validation (gt=0) but its envelope names the submission
    producer._producer.produce(TRANSCRIPTS.name, key=learner.encode(), value=json.dumps(invalid).encode())
    assert producer.flush(30) == 0
    after = submission_received(learner)
    producer.send(SUBMISSIONS.name, received)
    producer.send(SUBMISSIONS.name, after)

    wait_for(
        lambda: submission_row(projections_platform.postgres_dsn, after.submission_id),
        what="event after the poison projected",
    )
    dead = read_topic(
        SUBMISSIONS_DLQ.name,
        lambda rs: any(r.key == learner.encode() for r in rs),
        settings=projections_platform,
    )
    (record,) = [DeadLetterRecord.model_validate(r.value) for r in dead if r.key == learner.encode()]
    assert record.consumer_group == "projector" and record.original_topic == SUBMISSIONS.name
    assert record.original_value() == broken_json
    assert record.reason.startswith("invalid JSON")
    assert record.error_class == "JSONDecodeError"

    # The invalid transcript's dead letter names the submission: consuming it marks the submission failed.
    row = wait_for_status(
        projections_platform.postgres_dsn,
        received.submission_id,
        "failed",
        what="submission failed from the transcript's dead letter",
    )
    assert "duration_s" in row["failure_reason"]
    transcript_dead = read_topic(
        TRANSCRIPTS_DLQ.name, lambda rs: any(r.key == learner.encode() for r in rs), settings=projections_platform
    )
    assert [r.value["submission_id"] for r in transcript_dead if r.key == learner.encode()] == [
        str(received.submission_id)
    ]


def test_pipeline_dead_letter_marks_the_submission_failed_until_a_later_success(
    projections_platform: PlatformSettings, projector: None, producer: EventProducer
) -> None:
    received = submission_received(user_id())
    producer.send(SUBMISSIONS.name, received)
    record = DeadLetterRecord(
        failed_at=received.occurred_at.replace(second=30),
        original_topic=SUBMISSIONS.name,
        original_partition=0,
        original_offset=0,
        original_key=received.user_id,
        original_value_b64=DeadLetterRecord.encode_value(encode_event(received)),
        consumer_group="transcription",
        error_class="UndecodableAudio",
        reason="no audio stream in the container",
        user_id=received.user_id,
        submission_id=received.submission_id,
        event_id=received.event_id,
    )
    producer.send_dead_letter(SUBMISSIONS_DLQ.name, record)
    row = wait_for_status(projections_platform.postgres_dsn, received.submission_id, "failed", what="submission failed")
    assert row["failure_reason"] == "no audio stream in the container" and row["received_at"] == received.occurred_at
    # A redrive that succeeds later wins over the failure.
    producer.send(TRANSCRIPTS.name, transcript_created(received, delay_s=60))
    wait_for_status(
        projections_platform.postgres_dsn,
        received.submission_id,
        "transcribed",
        what="submission transcribed after the redrive",
    )


def test_cdc_status_reports_connector_and_slot(projections_platform: PlatformSettings) -> None:
    again = register_connector(projections_platform)  # idempotent
    assert again["connector"]["state"] == "RUNNING"
    status = cdc_status(projections_platform)
    assert status["connector"] == CONNECTOR_NAME
    assert status["state"] == "RUNNING" and status["tasks"] == ["RUNNING"]
    assert isinstance(status["slot_lag_bytes"], int) and status["slot_lag_bytes"] >= 0
    assert status["error"] is None


def test_value_postgres_refuses_is_dead_lettered_without_losing_its_batch(
    projections_platform: PlatformSettings, projector: None, producer: EventProducer
) -> None:
    learner = user_id()
    received = submission_received(learner)
    poisoned = transcript_created(received, text="nul \x00 inside")  # valid JSON and contract, but not a PG text
    neighbour = submission_received(learner)
    for topic, event in [(SUBMISSIONS.name, received), (TRANSCRIPTS.name, poisoned), (SUBMISSIONS.name, neighbour)]:
        producer.produce(topic, event)
    assert producer.flush(30) == 0

    wait_for(
        lambda: submission_row(projections_platform.postgres_dsn, neighbour.submission_id), what="neighbour projected"
    )
    dead = read_topic(
        TRANSCRIPTS_DLQ.name,
        lambda rs: any((r.value or {}).get("event_id") == str(poisoned.event_id) for r in rs),
        settings=projections_platform,
    )
    (record,) = [r.value for r in dead if (r.value or {}).get("event_id") == str(poisoned.event_id)]
    assert record["reason"].startswith("PostgreSQL refused the event")
    assert record["error_class"] == "DataError" and record["submission_id"] == str(received.submission_id)
    row = wait_for_status(
        projections_platform.postgres_dsn,
        received.submission_id,
        "failed",
        what="the poisoned transcript's submission failed",
    )
    assert row["received_at"] == received.occurred_at


def test_projector_prunes_dedup_ids_older_than_the_horizon(projections_platform: PlatformSettings) -> None:
    """processed_events keeps recent ids (duplicates still possible) and loses those past the horizon."""
    from uuid import uuid4

    from projections.projector import Projector
    from projections.read_models import prune_processed_events

    old, recent = [uuid4() for _ in range(3)], [uuid4() for _ in range(2)]
    with psycopg.connect(projections_platform.postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO processed_events (event_id, processed_at)"
            " SELECT unnest(%s::uuid[]), now() - interval '3 days'",
            (old,),
        )
        conn.execute("INSERT INTO processed_events (event_id) SELECT unnest(%s::uuid[])", (recent,))
        with pytest.raises(ValueError):
            prune_processed_events(conn, older_than=timedelta(0))

        Projector(ProjectorSettings(dedup_horizon_days=2), projections_platform)._prune_if_due()

        kept = {
            r[0]
            for r in conn.execute("SELECT event_id FROM processed_events WHERE event_id = ANY(%s)", (old + recent,))
        }
        assert kept == set(recent)
