"""The projector's pure parts: decoding consumed messages, dead-letter ids, stored positions, settings."""

from __future__ import annotations

import json
from uuid import UUID

import pytest
from confluent_kafka import Message
from pydantic import ValidationError

from projections.projector import (
    DEAD_LETTER_TOPIC_OF,
    PROJECTOR_TOPICS,
    ProjectorSettings,
    parse_message,
)
from runtime.consumer import dead_letter_id_for, dead_letter_record
from runtime.kafka import next_positions
from schemas import TOPICS, DeadLetterRecord, PoisonMessage, SubmissionReceived, TranscriptCreated, encode_event
from tests.projection_fixtures import submission_received, transcript_created

pytestmark = pytest.mark.unit

SUBMISSIONS, TRANSCRIPTS = "speech.submissions.v1", "speech.transcripts.v1"


def test_projector_reads_every_registry_topic() -> None:
    assert set(PROJECTOR_TOPICS) == {spec.name for spec in TOPICS if spec.name.startswith("speech.")}
    assert DEAD_LETTER_TOPIC_OF[SUBMISSIONS] == "speech.submissions.v1.dlq"


def test_valid_event_of_the_topic_is_decoded() -> None:
    event = submission_received("u1")
    parsed = parse_message(SUBMISSIONS, encode_event(event))
    assert isinstance(parsed, SubmissionReceived)
    assert parsed == event


def test_invalid_json_is_rejected_with_the_reason() -> None:
    with pytest.raises(PoisonMessage) as caught:
        parse_message(SUBMISSIONS, b"{not json")
    assert caught.value.reason.startswith("invalid JSON")
    assert caught.value.error_class == "JSONDecodeError"
    assert caught.value.known == {}


def test_failed_validation_keeps_the_readable_envelope_fields() -> None:
    raw = json.loads(encode_event(submission_received("u2")))
    raw["payload"]["duration_s"] = -1
    with pytest.raises(PoisonMessage) as caught:
        parse_message(SUBMISSIONS, json.dumps(raw).encode())
    assert "duration_s" in caught.value.reason
    assert caught.value.error_class == ValidationError.__name__
    assert caught.value.known == {
        "user_id": "u2",
        "submission_id": UUID(raw["submission_id"]),
        "event_id": UUID(raw["event_id"]),
    }


def test_event_on_the_wrong_topic_is_rejected() -> None:
    transcript = transcript_created(submission_received("u3"))
    with pytest.raises(PoisonMessage, match="TranscriptCreated does not belong on speech.submissions.v1"):
        parse_message(SUBMISSIONS, encode_event(transcript))
    assert isinstance(parse_message(TRANSCRIPTS, encode_event(transcript)), TranscriptCreated)


def test_tombstone_is_rejected() -> None:
    with pytest.raises(PoisonMessage, match="tombstone"):
        parse_message(SUBMISSIONS, None)


def test_dead_letter_topics_decode_dead_letter_records() -> None:
    msg = Message(topic=SUBMISSIONS, partition=2, offset=7, key=b"u4", value=b"x", timestamp=(1, 1_700_000_000_000))
    record = dead_letter_record(
        msg, PoisonMessage("UndecodableAudio", "undecodable audio"), consumer_group="transcription"
    )
    parsed = parse_message("speech.submissions.v1.dlq", record.model_dump_json().encode())
    assert isinstance(parsed, DeadLetterRecord)
    assert parsed.reason == "undecodable audio"
    with pytest.raises(PoisonMessage, match="invalid dead letter"):
        parse_message("speech.submissions.v1.dlq", b'{"record_type": "x"}')


def test_dead_letter_id_is_a_deterministic_uuid7() -> None:
    first = dead_letter_id_for(SUBMISSIONS, 3, 41, 1_700_000_000_123, "projector")
    assert first == dead_letter_id_for(SUBMISSIONS, 3, 41, 1_700_000_000_123, "projector")
    assert first.version == 7
    assert first.variant == "specified in RFC 4122"
    assert first.int >> 80 == 1_700_000_000_123  # the 48-bit time field is the message timestamp
    others = {dead_letter_id_for(SUBMISSIONS, 3, offset, 1_700_000_000_123, "projector") for offset in range(100)}
    assert len(others) == 100
    assert dead_letter_id_for(SUBMISSIONS, 3, 41, -1, "projector").int >> 80 == 0
    DeadLetterRecord(  # accepted by the contract's UUIDv7 check
        dead_letter_id=first,
        original_topic=SUBMISSIONS,
        original_partition=3,
        original_offset=41,
        original_value_b64="",
        consumer_group="projector",
        error_class="Rejected",
        reason="r",
    )


def test_next_positions_are_one_past_the_last_offset_per_partition() -> None:
    msgs = [
        Message(topic=SUBMISSIONS, partition=0, offset=5),
        Message(topic=SUBMISSIONS, partition=0, offset=9),
        Message(topic=SUBMISSIONS, partition=1, offset=0),
        Message(topic=TRANSCRIPTS, partition=0, offset=3),
    ]
    assert next_positions(msgs) == {(SUBMISSIONS, 0): 10, (SUBMISSIONS, 1): 1, (TRANSCRIPTS, 0): 4}
    assert next_positions([]) == {}


def test_settings_are_frozen_and_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COACH_PROJECTOR_BATCH_MAX_MESSAGES", "50")
    settings = ProjectorSettings()
    assert settings.batch_max_messages == 50
    assert settings.batch_max_wait_ms == 200
    with pytest.raises(ValidationError):
        settings.batch_max_messages = 1  # type: ignore[misc]
    for name, field in ProjectorSettings.model_fields.items():
        assert field.description, name
