"""Property: every consumer's decode step turns arbitrary bytes into a valid event or the poison error, never
anything else (hypothesis). The decode steps are the handlers' own ``decode`` (transcription, feedback,
projector), the metric flow's transcript and CDC decoders; the consumer loop dead-letters a ``PoisonMessage``."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback.worker import FeedbackWorker
from flows.calendar import TimezoneChange, parse_learner_change
from flows.records import SourceMessage, decode_transcript
from projections.projector import PROJECTOR_TOPICS, Projector
from schemas import (
    LEARNERS_CDC_TOPIC,
    SUBMISSIONS,
    TRANSCRIPTS,
    DeadLetterRecord,
    FeedbackGenerated,
    PoisonMessage,
    SubmissionReceived,
    TranscriptCreated,
    encode_event,
)
from tests.projection_fixtures import feedback_generated, submission_received, transcript_created
from transcription.worker import TranscriptionWorker

pytestmark = pytest.mark.unit

_RECEIVED = submission_received("u1")
_TRANSCRIPT = transcript_created(_RECEIVED)
VALID = [encode_event(e) for e in (_RECEIVED, _TRANSCRIPT, feedback_generated(_TRANSCRIPT))]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event of some type with one field replaced by an arbitrary JSON value (wrong types, huge numbers,
    unknown versions, missing payloads)."""
    raw = json.loads(draw(st.sampled_from(VALID)))
    target = raw if draw(st.booleans()) else raw["payload"]
    key = draw(st.sampled_from(sorted(target)))
    if draw(st.booleans()):
        target[key] = draw(json_values)
    else:
        del target[key]
    return json.dumps(raw).encode()


hostile = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"[" * 100_000, b"{" * 50_000, b"1e400", b"9" * 5000, b"\xff\xfe", b"null", b"[]"]),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_events(),
    st.sampled_from(VALID),
)

HANDLERS: list[tuple[str, Any, str, type]] = [
    ("transcription", TranscriptionWorker.decode, SUBMISSIONS.name, SubmissionReceived),
    ("feedback", FeedbackWorker.decode, TRANSCRIPTS.name, TranscriptCreated),
    *[("projector", Projector.decode, topic, object) for topic in PROJECTOR_TOPICS],
]


def _message(topic: str, value: bytes) -> Message:
    return Message(topic=topic, partition=0, offset=1, key=b"u1", value=value)


@pytest.mark.parametrize(("group", "decode", "topic", "expected"), HANDLERS, ids=[f"{h[0]}-{h[2]}" for h in HANDLERS])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=hostile)
def test_consumer_decode_gives_an_event_or_poison(
    group: str, decode: Any, topic: str, expected: type, value: bytes
) -> None:
    try:
        decoded = decode(cast(Any, None), _message(topic, value))
    except PoisonMessage as poison:
        assert poison.reason and poison.error_class
        return
    if topic.endswith(".dlq"):
        assert isinstance(decoded, DeadLetterRecord)
    else:
        assert isinstance(decoded, SubmissionReceived | TranscriptCreated | FeedbackGenerated)
        assert isinstance(decoded, expected)
        assert decoded.event_type == json.loads(value)["event_type"]


@settings(max_examples=500, deadline=None)
@given(value=hostile)
def test_flow_transcript_decode_gives_a_transcript_or_poison(value: bytes) -> None:
    try:
        event = decode_transcript(SourceMessage(TRANSCRIPTS.name, 0, 1, b"u1", value))
    except PoisonMessage:
        return
    assert isinstance(event, TranscriptCreated)


cdc_documents = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from(["c", "u", "r", "d", "t", "x"]) | json_values,
        "after": st.fixed_dictionaries(
            {},
            optional={"user_id": st.text(max_size=140) | json_values, "timezone": st.text(max_size=40) | json_values},
        )
        | json_values,
        "ts_ms": st.integers() | st.floats() | json_values,
        "source": st.fixed_dictionaries({}, optional={"ts_ms": st.integers() | st.floats() | json_values}),
    },
).map(lambda doc: json.dumps(doc).encode())


@settings(max_examples=500, deadline=None)
@given(value=hostile | cdc_documents)
def test_flow_cdc_decode_gives_a_change_none_or_poison(value: bytes) -> None:
    try:
        change = parse_learner_change(value)
    except PoisonMessage:
        return
    assert change is None or isinstance(change, TimezoneChange)
    if change is not None:
        assert change.user_id and change.effective_from.tzinfo is not None


def test_cdc_topic_name_is_the_registry_one() -> None:
    assert LEARNERS_CDC_TOPIC == "cdc.public.learners"
