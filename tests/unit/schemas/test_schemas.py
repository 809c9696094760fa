"""Event contracts: validation messages, JSON Schema staleness, compatibility check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas import (
    TOPICS,
    DeadLetterRecord,
    SubmissionReceived,
    TranscriptCreated,
    decode_event,
    encode_event,
    new_event_id,
)
from schemas.compatibility import breaking_changes, check_against_published
from schemas.export import JSON_DIR, contract_schemas, render

pytestmark = pytest.mark.unit


def submission(**overrides: Any) -> dict[str, Any]:
    event_id = new_event_id()
    raw: dict[str, Any] = {
        "event_id": str(event_id),
        "event_type": "SubmissionReceived",
        "schema_version": 1,
        "occurred_at": "2026-11-21T10:00:00+00:00",
        "user_id": "u-1",
        "submission_id": str(new_event_id()),
        "producer": "ingestion",
        "correlation_id": str(event_id),
        "payload": {
            "blob": {
                "uri": "file:///tmp/blob",
                "sha256": "a" * 64,
                "size_bytes": 10,
                "content_type": "audio/flac",
            },
            "container": "flac",
            "duration_s": 11.0,
        },
    }
    raw.update(overrides)
    return raw


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


def test_round_trip_keeps_every_field() -> None:
    event = decode_event(json.dumps(submission()))
    assert isinstance(event, SubmissionReceived)
    again = decode_event(encode_event(event))
    assert again == event
    assert event.occurred_at.tzinfo is not None
    assert event.event_id.version == 7


def test_occurred_at_is_normalised_to_utc() -> None:
    event = decode_event(submission(occurred_at="2026-11-21T12:00:00+02:00"))
    assert event.occurred_at == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)


def test_missing_field_is_named() -> None:
    raw = submission()
    del raw["user_id"]
    with pytest.raises(ValidationError) as info:
        decode_event(raw)
    assert "user_id" in error_fields(info.value)
    assert "user_id" in str(info.value)


def test_naive_datetime_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        decode_event(submission(occurred_at="2026-11-21T10:00:00"))
    assert error_fields(info.value) == {"occurred_at"}
    assert "timezone" in str(info.value)


def test_naive_datetime_object_is_rejected_in_constructor() -> None:
    raw = submission()
    raw["occurred_at"] = datetime(2026, 11, 21, 10, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValidationError) as info:
        SubmissionReceived.model_validate(raw)
    assert "occurred_at" in error_fields(info.value)


def test_unknown_schema_version_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        decode_event(submission(schema_version=99))
    assert error_fields(info.value) == {"schema_version"}
    assert "unknown schema_version 99" in str(info.value)


def test_unknown_event_type_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        decode_event(submission(event_type="Nope"))
    assert error_fields(info.value) == {"event_type"}


def test_event_id_must_be_uuid7() -> None:
    with pytest.raises(ValidationError) as info:
        decode_event(submission(event_id="0b9b4a5e-3f43-4d6e-8f38-2bb54b7b4a8c"))  # v4
    assert error_fields(info.value) == {"event_id"}


def test_nested_field_is_named() -> None:
    raw = submission()
    raw["payload"] = {**raw["payload"], "duration_s": -1}
    with pytest.raises(ValidationError) as info:
        decode_event(raw)
    assert error_fields(info.value) == {"payload.duration_s"}


def test_events_are_frozen_and_reject_unknown_fields() -> None:
    event = decode_event(submission())
    with pytest.raises(ValidationError):
        event.user_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError) as info:
        decode_event(submission(surprise=1))
    assert "surprise" in error_fields(info.value)


def test_transcript_words_must_lie_inside_the_clip() -> None:
    base = submission()
    payload = {
        "text": "hi",
        "language": "en",
        "language_probability": 1.0,
        "duration_s": 2.0,
        "segments": [],
        "words": [{"word": "hi", "start": 1.0, "end": 3.0, "probability": 0.9}],
        "asr_model": "tiny.en",
        "compute_type": "int8",
        "device": "cpu",
        "timings": {
            "queue_wait_ms": 0,
            "fetch_ms": 0,
            "decode_ms": 0,
            "vad_ms": 0,
            "inference_ms": 0,
            "batch_size": 1,
        },
    }
    raw = {**base, "event_type": "TranscriptCreated", "payload": payload}
    with pytest.raises(ValidationError) as info:
        decode_event(raw)
    assert "after the clip's end" in str(info.value)
    payload["words"] = [{"word": "hi", "start": 1.0, "end": 1.5, "probability": 0.9}]
    assert isinstance(decode_event(raw), TranscriptCreated)


def _transcript_v2(words: dict[str, Any], duration_s: float = 2.0) -> dict[str, Any]:
    payload = {
        "text": "hi there",
        "language": "en",
        "language_probability": 1.0,
        "duration_s": duration_s,
        "segments": [],
        "words": words,
        "asr_model": "tiny.en",
        "compute_type": "int8",
        "device": "cpu",
        "timings": {"queue_wait_ms": 0, "fetch_ms": 0, "decode_ms": 0, "vad_ms": 0, "inference_ms": 0, "batch_size": 1},
    }
    return {**submission(), "event_type": "TranscriptCreated", "schema_version": 2, "payload": payload}


@pytest.mark.parametrize("as_bytes", [False, True])
def test_transcript_v2_words_are_parallel_arrays_checked_together(as_bytes: bool) -> None:
    def decode(raw: dict[str, Any]) -> Any:
        return decode_event(json.dumps(raw).encode() if as_bytes else raw)

    good = {"text": [" hi", " there."], "start": [0.1, 0.6], "end": [0.5, 1.2], "probability": [0.9, 1.0]}
    event = decode(_transcript_v2(good))
    assert isinstance(event, TranscriptCreated) and event.schema_version == 3  # upcast
    assert len(event.payload.words) == 2
    assert event.payload.words.timed()[1] == (" there.", 0.6, 1.2, 1.0)
    assert event.payload.words.timed()[1].start == 0.6
    cases = [
        ({**good, "end": [0.5]}, "one entry per word, got lengths 2, 2, 1, 2"),
        ({**good, "end": [0.5, 0.55]}, "word 1: end (0.55) is before start (0.6)"),
        ({**good, "start": [0.1, -0.6]}, "greater than or equal to 0"),
        ({**good, "probability": [0.9, 1.5]}, "less than or equal to 1"),
        ({**good, "end": [0.5, 3.0]}, "words.end[1] 3.0 s is after the clip's end 2.0 s"),
    ]
    for words, message in cases:
        with pytest.raises(ValidationError) as info:
            decode(_transcript_v2(words))
        assert message in str(info.value), words


def test_transcript_v1_is_upcast_to_v2_with_the_same_words() -> None:
    rows = [
        {"word": " hi", "start": 0.1, "end": 0.5, "probability": 0.9},
        {"word": " there.", "start": 0.6, "end": 1.2, "probability": 1.0},
    ]
    raw = _transcript_v2(rows)
    raw["schema_version"] = 1
    for data in (raw, json.dumps(raw).encode()):
        event = decode_event(data)
        assert isinstance(event, TranscriptCreated) and event.schema_version == 3  # v1 -> v2 -> v3
        assert [w._asdict() for w in event.payload.words.timed()] == rows
        columns = {"text": [r["word"] for r in rows]} | {
            k: [r[k] for r in rows] for k in ("start", "end", "probability")
        }
        expected = {**raw, "schema_version": 2, "payload": {**raw["payload"], "words": columns}}
        assert event == decode_event(expected)
    # A broken v1 event is rejected with v1's own message (the upcaster validates against v1 first).
    raw["payload"]["words"][1]["end"] = 0.55
    with pytest.raises(ValidationError) as info:
        decode_event(raw)
    assert "end (0.55) is before start (0.6)" in str(info.value)
    assert "payload.words.1" in error_fields(info.value)


def test_transcript_v2_is_upcast_to_v3_without_hesitations() -> None:
    words = {"text": [" hi", " there."], "start": [0.1, 0.6], "end": [0.5, 1.2], "probability": [0.9, 1.0]}
    raw = _transcript_v2(words)
    for data in (raw, json.dumps(raw).encode()):
        event = decode_event(data)
        assert isinstance(event, TranscriptCreated) and event.schema_version == 3
        assert event.payload.hesitations is None  # the detector did not run: not "none found"
        assert event.payload.initial_prompt is None and event.payload.redecoded_chunks == 0
        assert event.payload.words.text == [" hi", " there."]
        current = {**raw, "schema_version": 3}
        current["payload"] = {
            **raw["payload"],
            "hesitations": None,
            "initial_prompt": None,
            "redecoded_chunks": 0,
            "unprompted_chunks": 0,
        }
        assert event == decode_event(current)


def test_transcript_v3_hesitations_are_checked() -> None:
    words = {"text": [" hi"], "start": [0.1], "end": [0.5], "probability": [0.9]}
    raw = {**_transcript_v2(words), "schema_version": 3}
    span = {"start": 0.6, "end": 1.1, "kind": "voiced_gap", "confidence": 0.8}
    raw["payload"] = {**raw["payload"], "hesitations": [span], "initial_prompt": "Um, uh.", "redecoded_chunks": 1}
    event = decode_event(json.dumps(raw).encode())
    assert isinstance(event, TranscriptCreated)
    assert event.payload.hesitations is not None and event.payload.hesitations[0].kind == "voiced_gap"
    cases = [
        ({**span, "end": 0.5}, "end (0.5) is before start (0.6)"),
        ({**span, "kind": "cough"}, "voiced_gap"),
        ({**span, "confidence": 1.5}, "less than or equal to 1"),
        ({**span, "end": 2.5}, "hesitations[0].end 2.5 s is after the clip's end 2.0 s"),
    ]
    for bad, message in cases:
        raw["payload"]["hesitations"] = [bad]
        with pytest.raises(ValidationError) as info:
            decode_event(json.dumps(raw).encode())
        assert message in str(info.value), bad


def test_caused_event_inherits_correlation() -> None:
    event = decode_event(submission())
    fields = event.caused(producer="transcription")
    assert fields["causation_id"] == event.event_id
    assert fields["correlation_id"] == event.correlation_id
    assert fields["submission_id"] == event.submission_id


def test_dead_letter_round_trip() -> None:
    record = DeadLetterRecord(
        original_topic="speech.submissions.v1",
        original_partition=3,
        original_offset=42,
        original_value_b64=DeadLetterRecord.encode_value(b"\x00garbage"),
        consumer_group="transcription",
        error_class="UndecodableAudio",
        reason="invalid data found when processing input",
    )
    assert DeadLetterRecord.model_validate_json(record.model_dump_json()).original_value() == b"\x00garbage"
    assert record.failed_at.utcoffset() == timedelta(0)


def test_checked_in_json_schemas_are_fresh() -> None:
    current = contract_schemas()
    on_disk = {p.name for p in JSON_DIR.glob("*.json")}
    assert on_disk == set(current), "run `coach schemas export`"
    for name, schema in current.items():
        assert (JSON_DIR / name).read_text(encoding="utf-8") == render(schema), (
            f"{name} is stale: run `coach schemas export`"
        )


def test_published_schemas_are_compatible() -> None:
    assert check_against_published() == {}


class _V1(BaseModel):
    a: int
    b: str | None = None


class _AddedOptional(BaseModel):
    a: int
    b: str | None = None
    c: float | None = None


class _AddedRequired(BaseModel):
    a: int
    b: str | None = None
    c: float


class _RemovedField(BaseModel):
    a: int


class _ChangedType(BaseModel):
    a: str
    b: str | None = None


class _MadeRequired(BaseModel):
    a: int
    b: str


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (_AddedOptional, []),
        (_AddedRequired, [".c: new required property"]),
        (_RemovedField, [".b: property removed"]),
        (_ChangedType, [".a: type changed, no longer accepts ['integer']"]),
        (
            _MadeRequired,
            [".b: optional property became required", ".b: type changed, no longer accepts ['null']"],
        ),
    ],
)
def test_compatibility_rules(new: type[BaseModel], expected: list[str]) -> None:
    assert breaking_changes(_V1.model_json_schema(), new.model_json_schema()) == expected


def test_breaking_change_to_a_real_contract_is_rejected(tmp_path: Any) -> None:
    published = json.loads((JSON_DIR / "SubmissionReceived.v1.json").read_text())
    mutated = json.loads(json.dumps(published))
    mutated["$defs"]["SubmissionReceivedPayload"]["properties"]["duration_s"]["type"] = "string"
    assert breaking_changes(mutated, published) == [".payload.duration_s: type changed, no longer accepts ['string']"]


def test_topic_registry_names_and_keys() -> None:
    names = [t.name for t in TOPICS]
    assert names[:3] == ["speech.submissions.v1", "speech.transcripts.v1", "speech.feedback.v1"]
    assert {f"{n}.dlq" for n in names[:3]} <= set(names)
    assert len(set(names)) == len(names)
    for spec in TOPICS[:3]:
        assert spec.key == "user_id"
        assert spec.retention_ms == -1
