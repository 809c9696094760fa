"""Event contracts of the Speech Coach platform (the bottom layer: imports nothing of ours).

Public API re-exported here; the modules are: ``envelope`` (common fields), ``events`` (payloads),
``events_v1`` and ``events_v2`` (superseded versions and their upcasters),
``dead_letter``, ``registry`` (decode/encode, upcasters), ``topics`` (topic registry, consumer
groups), ``export`` (JSON Schema files) and ``compatibility`` (breaking-change check).
"""

from schemas.dead_letter import DeadLetterRecord, PoisonMessage
from schemas.envelope import EventEnvelope, new_event_id, utc_now
from schemas.events import (
    BlobRef,
    FeedbackGenerated,
    FeedbackGeneratedPayload,
    FeedbackPoint,
    HesitationSpan,
    ProviderAttempt,
    StageTimings,
    SubmissionReceived,
    SubmissionReceivedPayload,
    TokenUsage,
    TranscriptCreated,
    TranscriptCreatedPayload,
    TranscriptSegment,
    TranscriptWords,
    Word,
)
from schemas.registry import Event, decode_event, decode_expected, encode_event
from schemas.topics import (
    FEEDBACK,
    FEEDBACK_DLQ,
    LEARNERS_CDC_DLQ,
    LEARNERS_CDC_TOPIC,
    SUBMISSIONS,
    SUBMISSIONS_DLQ,
    TOPICS,
    TRANSCRIPTS,
    TRANSCRIPTS_DLQ,
    ConsumerGroups,
    TopicSpec,
    dlq_of,
)

__all__ = [
    "BlobRef",
    "ConsumerGroups",
    "DeadLetterRecord",
    "Event",
    "PoisonMessage",
    "EventEnvelope",
    "FEEDBACK",
    "FEEDBACK_DLQ",
    "LEARNERS_CDC_DLQ",
    "LEARNERS_CDC_TOPIC",
    "FeedbackGenerated",
    "FeedbackGeneratedPayload",
    "HesitationSpan",
    "FeedbackPoint",
    "ProviderAttempt",
    "StageTimings",
    "SUBMISSIONS",
    "SUBMISSIONS_DLQ",
    "SubmissionReceived",
    "SubmissionReceivedPayload",
    "TOPICS",
    "TRANSCRIPTS",
    "TRANSCRIPTS_DLQ",
    "TokenUsage",
    "TopicSpec",
    "TranscriptCreated",
    "TranscriptCreatedPayload",
    "TranscriptSegment",
    "TranscriptWords",
    "Word",
    "decode_event",
    "decode_expected",
    "dlq_of",
    "encode_event",
    "new_event_id",
    "utc_now",
]
