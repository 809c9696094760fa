"""AsyncAPI 3.0 document of the platform's topics, generated with FastStream from the event contracts.

Every topic of :data:`schemas.topics.TOPICS` plus Debezium's ``cdc.public.<table>`` topics is declared on a
FastStream ``KafkaBroker`` (confluent-kafka flavour): one *publisher* per producing service and one *subscriber* per
consumer group, each with the pydantic model of its messages, so the document's message schemas are the contracts
themselves. FastStream is used only to declare and document; the services run their own confluent-kafka loops (the
projector needs to seek to positions stored in PostgreSQL when partitions are assigned, which FastStream's
subscribers do not offer). ``coach asyncapi`` writes the document to ``docs/asyncapi.yaml``.

References: https://www.asyncapi.com/docs/reference/specification/v3.0.0,
https://faststream.ag2.ai/latest/getting-started/asyncapi/export/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from faststream.confluent import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from projections.cdc_dedup import ChangeEvent
from projections.debezium import CAPTURED_TABLES, cdc_topic
from schemas import topics
from schemas.dead_letter import DeadLetterRecord
from schemas.events import FeedbackGenerated, SubmissionReceived, TranscriptCreated
from schemas.topics import TOPICS, ConsumerGroups, TopicSpec

__all__ = ["DOC_PATH", "asyncapi_yaml", "build_broker", "documented_topics", "write_asyncapi"]

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
"""Where ``coach asyncapi`` writes the document by default (checked in; a test keeps it fresh)."""

DOC_SERVER = "localhost:9092"
"""Server shown in the document (the local stack's default broker), fixed so the document does not depend on env."""

TITLE = "Speech Coach event streams"
VERSION = "1"

_MODELS: dict[str, type[BaseModel]] = {
    SubmissionReceived.EVENT_TYPE: SubmissionReceived,
    TranscriptCreated.EVENT_TYPE: TranscriptCreated,
    FeedbackGenerated.EVENT_TYPE: FeedbackGenerated,
    "DeadLetter": DeadLetterRecord,
}

# Who produces each topic, and which consumer groups read it (the DLQ topics are written by the consumer groups of
# their source topic and read by the projector, which marks the submission failed).
_PRODUCERS: dict[str, tuple[str, ...]] = {
    topics.SUBMISSIONS.name: ("ingestion",),
    topics.TRANSCRIPTS.name: (ConsumerGroups.TRANSCRIPTION,),
    topics.FEEDBACK.name: (ConsumerGroups.FEEDBACK,),
    topics.SUBMISSIONS_DLQ.name: (ConsumerGroups.TRANSCRIPTION, ConsumerGroups.PROJECTOR),
    topics.TRANSCRIPTS_DLQ.name: (ConsumerGroups.FEEDBACK, ConsumerGroups.PROJECTOR, ConsumerGroups.METRICS_FLOW),
    topics.FEEDBACK_DLQ.name: (ConsumerGroups.PROJECTOR, ConsumerGroups.METRICS_FLOW),
    topics.LEARNERS_CDC_DLQ.name: (ConsumerGroups.METRICS_FLOW,),
}
_CONSUMERS: dict[str, tuple[str, ...]] = {
    topics.SUBMISSIONS.name: (ConsumerGroups.TRANSCRIPTION, ConsumerGroups.PROJECTOR),
    topics.TRANSCRIPTS.name: (ConsumerGroups.FEEDBACK, ConsumerGroups.PROJECTOR, ConsumerGroups.METRICS_FLOW),
    topics.FEEDBACK.name: (ConsumerGroups.PROJECTOR, ConsumerGroups.METRICS_FLOW),
    topics.SUBMISSIONS_DLQ.name: (ConsumerGroups.PROJECTOR,),
    topics.TRANSCRIPTS_DLQ.name: (ConsumerGroups.PROJECTOR,),
    topics.FEEDBACK_DLQ.name: (ConsumerGroups.PROJECTOR,),
    topics.LEARNERS_CDC_DLQ.name: (),
}
_CDC_CONSUMERS: dict[str, tuple[str, ...]] = {"learners": (ConsumerGroups.METRICS_FLOW,)}


def documented_topics() -> list[str]:
    """Every topic in the document: the registry's, then ``cdc.public.<table>`` of each captured table."""
    return [spec.name for spec in TOPICS] + [cdc_topic(table) for table in CAPTURED_TABLES]


def _describe(spec: TopicSpec) -> str:
    retention = "forever" if spec.retention_ms < 0 else f"{spec.retention_ms // 86_400_000} days"
    return (
        f"{spec.description or spec.value}. Key: {spec.key}; {spec.partitions} partition(s); retention {retention}; "
        f"value: {spec.value} (JSON)."
    )


def _handler(model: type[BaseModel]) -> Any:
    """A no-op subscriber function whose parameter is typed with ``model`` (FastStream documents the type)."""

    async def handle(message: Any) -> None:
        return None

    handle.__annotations__ = {"message": model, "return": None}
    handle.__name__ = f"on_{model.__name__}"
    return handle


def build_broker(bootstrap_servers: str = DOC_SERVER) -> KafkaBroker:
    """A FastStream broker declaring every topic's publishers and subscribers (never connected)."""
    broker = KafkaBroker(
        bootstrap_servers,
        description="Kafka API (Apache Kafka locally, Redpanda in containers). Messages are UTF-8 JSON.",
    )
    for spec in TOPICS:
        model = _MODELS[spec.value]
        for producer in _PRODUCERS[spec.name]:
            broker.publisher(
                spec.name,
                title=f"{spec.name}:{producer}",
                description=f"Produced by {producer}. {_describe(spec)}",
                schema=model,
                include_in_schema=True,
            )
        for group in _CONSUMERS[spec.name]:
            broker.subscriber(
                spec.name,
                group_id=group,
                title=f"{spec.name}:{group}:consume",
                description=f"Consumed by consumer group {group!r}. {_describe(spec)}",
            )(_handler(model))
    for table in CAPTURED_TABLES:
        topic = cdc_topic(table)
        broker.publisher(
            topic,
            title=f"{topic}:debezium",
            description=(
                f"Debezium change events of PostgreSQL table public.{table} (JSON converter without schemas). "
                "Key: the primary key columns as a JSON object; 6 partitions; at-least-once (deduplicate by "
                "source.lsn, table and key)."
            ),
            schema=ChangeEvent,
        )
        for group in _CDC_CONSUMERS.get(table, ()):
            broker.subscriber(
                topic, group_id=group, title=f"{topic}:{group}:consume", description=f"Consumed by {group!r}."
            )(_handler(ChangeEvent))
    return broker


def asyncapi_yaml(bootstrap_servers: str = DOC_SERVER) -> str:
    """The AsyncAPI 3.0 document as YAML text."""
    spec = AsyncAPI(
        build_broker(bootstrap_servers),
        title=TITLE,
        version=VERSION,
        description=(
            "Topics of the Speech Coach analytics platform: immutable, versioned events keyed by user_id, their "
            "dead-letter topics, and Debezium's change data capture of the PostgreSQL read models. "
            "Generated by `coach asyncapi` from the pydantic contracts in schemas/."
        ),
        schema_version="3.0.0",
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    # FastStream keeps subscribers in a set: sort the named maps so the document is stable (it is checked in).
    for section in ("channels", "operations"):
        document[section] = dict(sorted(document.get(section, {}).items()))
    events = {f"#/components/schemas/{name}" for name in _MODELS if name != "DeadLetter"}
    for message in document.get("components", {}).get("messages", {}).values():
        # The envelope carries correlation_id in the message body (FastStream's default points at a header).
        if message.get("payload", {}).get("$ref") in events:
            message["correlationId"] = {"location": "$message.payload#/correlation_id"}
        else:
            message.pop("correlationId", None)
    for section in ("messages", "schemas"):
        components = document.get("components", {})
        components[section] = dict(sorted(components.get(section, {}).items()))
    return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120))


def write_asyncapi(path: Path | str = DOC_PATH) -> Path:
    """Write the document to ``path`` (parent directories created). Returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(asyncapi_yaml(), encoding="utf-8")
    return target
