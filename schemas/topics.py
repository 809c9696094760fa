"""The topic registry and the platform's other stable identifiers.

Renaming anything here is a migration: consumers would lose their committed offsets and
downstream tables their lineage. Add a note to ``docs/MIGRATIONS.md`` when you do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "TopicSpec",
    "SUBMISSIONS",
    "TRANSCRIPTS",
    "FEEDBACK",
    "SUBMISSIONS_DLQ",
    "TRANSCRIPTS_DLQ",
    "FEEDBACK_DLQ",
    "TOPICS",
    "ConsumerGroups",
    "CDC_TOPIC_PREFIX",
    "LEARNERS_CDC_TOPIC",
    "LEARNERS_CDC_DLQ",
    "dlq_of",
]

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A Kafka topic: name, what its key is, partitions and retention.

    ``retention_ms=-1`` keeps events forever, which replay/backfill relies on (the topics are the
    system of record). See https://kafka.apache.org/documentation/#topicconfigs.
    """

    name: str
    key: str
    partitions: int
    retention_ms: int
    cleanup_policy: Literal["delete", "compact"] = "delete"
    value: str = ""
    description: str = ""

    def config(self) -> dict[str, str]:
        """Topic-level configs for ``AdminClient.create_topics``."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


def dlq_of(topic: str) -> str:
    """Name of the dead-letter topic of ``topic`` (``<topic>.dlq``)."""
    return f"{topic}.dlq"


SUBMISSIONS = TopicSpec(
    "speech.submissions.v1", "user_id", 6, -1, value="SubmissionReceived",
    description="Accepted recordings (blob reference, container metadata)",
)  # fmt: skip
TRANSCRIPTS = TopicSpec(
    "speech.transcripts.v1", "user_id", 6, -1, value="TranscriptCreated",
    description="Transcripts with word timestamps",
)  # fmt: skip
FEEDBACK = TopicSpec(
    "speech.feedback.v1", "user_id", 6, -1, value="FeedbackGenerated",
    description="Coaching feedback",
)  # fmt: skip
SUBMISSIONS_DLQ = TopicSpec(dlq_of(SUBMISSIONS.name), "original key", 1, 30 * DAY_MS, value="DeadLetter")
TRANSCRIPTS_DLQ = TopicSpec(dlq_of(TRANSCRIPTS.name), "original key", 1, 30 * DAY_MS, value="DeadLetter")
FEEDBACK_DLQ = TopicSpec(dlq_of(FEEDBACK.name), "original key", 1, 30 * DAY_MS, value="DeadLetter")

CDC_TOPIC_PREFIX = "cdc"
"""Debezium ``topic.prefix``: change events land on ``cdc.public.<table>``."""

LEARNERS_CDC_TOPIC = f"{CDC_TOPIC_PREFIX}.public.learners"
"""Debezium's change events of the ``learners`` table (created by Debezium, or by the metric flow first)."""
LEARNERS_CDC_DLQ = TopicSpec(dlq_of(LEARNERS_CDC_TOPIC), "original key", 1, 30 * DAY_MS, value="DeadLetter",
                             description="Change events of learners the metric flow could not parse")  # fmt: skip

TOPICS: tuple[TopicSpec, ...] = (
    SUBMISSIONS,
    TRANSCRIPTS,
    FEEDBACK,
    SUBMISSIONS_DLQ,
    TRANSCRIPTS_DLQ,
    FEEDBACK_DLQ,
    LEARNERS_CDC_DLQ,
)
"""Every topic ``coach migrate`` creates. ``cdc.public.<table>`` topics are created by Debezium."""


class ConsumerGroups:
    """Kafka consumer group ids (their committed offsets are the services' progress)."""

    TRANSCRIPTION = "transcription"
    PROJECTOR = "projector"
    FEEDBACK = "feedback"
    METRICS_FLOW = "flows.metrics"
