"""The observability dataflow (Bytewax): the platform's own events mirrored into ClickHouse for Grafana.

::

    speech.submissions.v1 ┐
    speech.transcripts.v1 ├─▶ pipeline_events (one row per event: throughput, end-to-end latency)
    speech.feedback.v1    ┘        └─ transcripts ─▶ transcription_runs (per-stage timings, batch sizes)
    *.dlq ───────────────────────▶ dead_letters
    cdc.public.learners ─────────▶ learner_profiles (cohort and coach for the dashboards)

plus :func:`sample_consumer_lag`, a periodic sampler of every consumer group's lag into ``consumer_lag``
(lag is not an event stream, so it is not a dataflow). Rows are keyed by their natural keys in
ReplacingMergeTree tables (``clickhouse/sql/0001``, ``0005``) and written through the idempotent batching sink,
so a restart or a replay never double-counts. A record that cannot be parsed is counted
(``coach_observability_unparsed_total``) and logged: its own consumer (projector, workers) dead-letters it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter

from flows import step_ids as ids
from flows.clickhouse_sink import ClickHouseSink, SinkRow
from flows.dataflow import execute, prepare_recovery_dir
from flows.kafka_source import KafkaPartitionSource, end_offsets
from flows.records import SourceMessage
from flows.settings import FlowSettings
from flows.tables import check_datetimes
from runtime.clickhouse import get_clickhouse_client
from runtime.settings import PlatformSettings
from schemas import (
    FEEDBACK,
    FEEDBACK_DLQ,
    LEARNERS_CDC_DLQ,
    SUBMISSIONS,
    SUBMISSIONS_DLQ,
    TRANSCRIPTS,
    TRANSCRIPTS_DLQ,
    ConsumerGroups,
    DeadLetterRecord,
    TranscriptCreated,
    decode_event,
)

__all__ = [
    "EVENT_COLUMNS",
    "DEAD_LETTER_COLUMNS",
    "PROFILE_COLUMNS",
    "RUN_COLUMNS",
    "build_observability_flow",
    "rows_of",
    "run_observability_flow",
    "sample_consumer_lag",
]

log = logging.getLogger(__name__)

UNPARSED = Counter(
    "coach_observability_unparsed_total", "Records the observability flow could not parse (by topic)", ["topic"]
)

EVENT_COLUMNS = ("event_id", "event_type", "user_id", "submission_id", "occurred_at", "topic", "partition", "offset")
RUN_COLUMNS = (
    "event_id", "submission_id", "user_id", "occurred_at", "duration_s", "asr_model", "compute_type", "device",
    "language", "word_count", "batch_size", "queue_wait_ms", "fetch_ms", "decode_ms", "vad_ms", "inference_ms",
    "source_partition", "source_offset",
)  # fmt: skip
DEAD_LETTER_COLUMNS = (
    "dead_letter_id", "failed_at", "topic", "original_topic", "original_partition", "original_offset",
    "consumer_group", "error_class", "reason", "user_id", "submission_id", "event_id",
)  # fmt: skip
PROFILE_COLUMNS = ("user_id", "display_name", "timezone", "cohort", "coach_id", "updated_at", "deleted")
LAG_COLUMNS = ("sampled_at", "consumer_group", "topic", "partition", "end_offset", "committed_offset", "lag")

EVENT_TOPICS = (SUBMISSIONS.name, TRANSCRIPTS.name, FEEDBACK.name)
DLQ_TOPICS = (SUBMISSIONS_DLQ.name, TRANSCRIPTS_DLQ.name, FEEDBACK_DLQ.name, LEARNERS_CDC_DLQ.name)
LEARNERS_CDC = ids.LEARNERS_CDC_TOPIC

Rows = list[tuple[str, tuple[Any, ...]]]


def _position(message: SourceMessage) -> str:
    return f"{message.topic}:{message.partition}:{message.offset}"


def _cdc_time(value: Any) -> datetime:
    """Debezium's ZonedTimestamp (ISO 8601 string) or epoch microseconds, as a UTC datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1_000_000, UTC)
    return datetime.now(UTC)


def rows_of(message: SourceMessage) -> Rows:
    """The ``(table, row)`` pairs one message produces; ``[]`` (and a counter) when it cannot be parsed.

    Tables: ``pipeline_events``/``transcription_runs`` for events, ``dead_letters`` for ``.dlq`` records,
    ``learner_profiles`` for learner change events.
    """
    try:
        rows = _rows(message)
        for _table, row in rows:
            check_datetimes(row)  # a row ClickHouse refuses would fail the whole insert
        return rows
    except Exception as exc:  # noqa: BLE001 - a mirror never stops on one message; its consumers dead-letter it
        UNPARSED.labels(message.topic).inc()
        log.warning("observability: skipped %s (%s): %.300s", _position(message), type(exc).__name__, exc)
    return []


def _rows(message: SourceMessage) -> Rows:
    """The rows of one message by its topic (raises on a malformed one)."""
    if message.topic in EVENT_TOPICS:
        return _event_rows(message)
    if message.topic in DLQ_TOPICS:
        record = DeadLetterRecord.model_validate_json(message.value or b"")
        row = (
            record.dead_letter_id, record.failed_at, message.topic, record.original_topic,
            record.original_partition, record.original_offset, record.consumer_group, record.error_class,
            record.reason, record.user_id, record.submission_id, record.event_id,
        )  # fmt: skip
        return [("dead_letters", row)]
    if message.topic == LEARNERS_CDC:
        return _profile_rows(message)
    return []


def _event_rows(message: SourceMessage) -> Rows:
    event = decode_event(message.value or b"")
    rows: Rows = [
        ("pipeline_events", (event.event_id, event.event_type, event.user_id, event.submission_id,
                             event.occurred_at, message.topic, message.partition, message.offset)),
    ]  # fmt: skip
    if isinstance(event, TranscriptCreated):
        p, t = event.payload, event.payload.timings
        rows.append(
            ("transcription_runs", (
                event.event_id, event.submission_id, event.user_id, event.occurred_at, p.duration_s, p.asr_model,
                p.compute_type, p.device, p.language, len(p.words), t.batch_size, t.queue_wait_ms, t.fetch_ms,
                t.decode_ms, t.vad_ms, t.inference_ms, message.partition, message.offset,
            ))
        )  # fmt: skip
    return rows


def _profile_rows(message: SourceMessage) -> Rows:
    if not message.value:
        return []  # Debezium's tombstone after a delete: the delete event itself was recorded
    change = json.loads(message.value)
    change = change.get("payload", change)  # with or without embedded schemas
    deleted = change.get("op") == "d"
    image = change.get("before") if deleted else change.get("after")
    if not image:
        return []
    updated = _cdc_time(image.get("updated_at")) if image.get("updated_at") else _cdc_time(change.get("ts_us"))
    if deleted:
        updated = max(updated, datetime.fromtimestamp(change.get("ts_ms", 0) / 1000, UTC))
    user_id = image["user_id"]
    if not isinstance(user_id, str) or not user_id:
        raise TypeError(f"user_id must be a non-empty string, got {type(user_id).__name__}")
    texts = [image.get(key) for key in ("display_name", "timezone", "cohort", "coach_id")]
    if any(value is not None and not isinstance(value, str) for value in texts):
        raise TypeError("display_name, timezone, cohort and coach_id must be strings or null")
    display_name, timezone, cohort, coach_id = texts
    row = (user_id, display_name, timezone or "UTC", cohort, coach_id, updated, 1 if deleted else 0)
    return [("learner_profiles", row)]


def build_observability_flow(
    settings: FlowSettings,
    platform: PlatformSettings,
    *,
    stop_event: threading.Event | None = None,
    database: str | None = None,
) -> Dataflow:
    """The dataflow: one Kafka source per topic, merged, mapped to rows, one idempotent sink per table."""
    flow = Dataflow(ids.OBSERVABILITY_FLOW)
    database = database or platform.clickhouse_database

    def factory() -> Client:
        return get_clickhouse_client(platform, database=database, new=True)

    streams = [
        op.input(
            f"{ids.OBS_INPUT}_{topic.replace('.', '_')}",
            flow,
            KafkaPartitionSource(
                topic, bootstrap=platform.bootstrap_servers, group_id=ids.OBSERVABILITY_FLOW, stop_event=stop_event
            ),
        )
        for topic in (*EVENT_TOPICS, *DLQ_TOPICS, LEARNERS_CDC)
    ]
    merged = op.merge(ids.OBS_MERGE, *streams)

    def to_rows(message: SourceMessage) -> Iterable[tuple[str, SinkRow]]:
        position = _position(message)
        return [(table, (row, position)) for table, row in rows_of(message)]

    def only(name: str) -> Callable[[tuple[str, SinkRow]], tuple[str, SinkRow] | None]:
        # Keyed by the row's first column (its id) for the sink's partitioning.
        return lambda item: (str(item[1][0][0]), item[1]) if item[0] == name else None

    rows = op.flat_map(ids.OBS_ROWS, merged, to_rows)
    for table, columns in (("pipeline_events", EVENT_COLUMNS), ("transcription_runs", RUN_COLUMNS),
                           ("dead_letters", DEAD_LETTER_COLUMNS), ("learner_profiles", PROFILE_COLUMNS)):  # fmt: skip
        selected = op.filter_map(f"{ids.OBS_SELECT}_{table}", rows, only(table))
        op.output(
            f"{ids.OBS_OUTPUT}_{table}",
            selected,
            ClickHouseSink(
                f"{database}.{table}", columns, client_factory=factory, batch_rows=settings.sink_batch_rows,
                retries=settings.insert_retries,
            ),
        )  # fmt: skip
    return flow


def run_observability_flow(
    stop_event: threading.Event | None = None,
    *,
    settings: FlowSettings | None = None,
    platform: PlatformSettings | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the observability flow in this thread until ``stop_event`` is set (what ``coach run`` runs);
    ``on_ready`` is called once it runs.

    Snapshots go to ``<COACH_HOME>/flows/observability-recovery``, so a restart resumes where it stopped.
    """
    settings = settings or FlowSettings()
    platform = platform or PlatformSettings()
    for topic in (*EVENT_TOPICS, *DLQ_TOPICS):
        end_offsets(platform.bootstrap_servers, topic)  # fail fast, with the topic named, if it is missing
    recovery = prepare_recovery_dir(platform.home_dir / "flows" / "observability-recovery", 1)
    flow = build_observability_flow(settings, platform, stop_event=stop_event)
    if on_ready is not None:
        on_ready()
    execute(flow, settings.model_copy(update={"workers": 1}), recovery, settings.epoch_interval_s)


def sample_consumer_lag(
    stop: threading.Event,
    *,
    platform: PlatformSettings | None = None,
    every_s: float = 15.0,
    groups: Iterable[tuple[str, str]] = (
        (ConsumerGroups.TRANSCRIPTION, SUBMISSIONS.name),
        (ConsumerGroups.FEEDBACK, TRANSCRIPTS.name),
    ),
    client_factory: Callable[[], Client] | None = None,
) -> None:
    """Every ``every_s`` seconds, write each (group, topic, partition)'s end offset, committed offset and lag
    into ``consumer_lag`` until ``stop`` is set. The projector keeps its positions in PostgreSQL, so its lag
    is not Kafka's to report."""
    platform = platform or PlatformSettings()
    factory = client_factory or (lambda: get_clickhouse_client(platform, new=True))
    pairs = list(groups)
    consumers = {
        group: Consumer(
            {"bootstrap.servers": platform.bootstrap_servers, "group.id": group, "enable.auto.commit": False}
        )  # fmt: skip
        for group, _ in pairs
    }
    try:
        while not stop.is_set():
            sampled = datetime.now(UTC)
            rows = []
            for group, topic in pairs:
                try:
                    ends = end_offsets(platform.bootstrap_servers, topic, timeout_s=5)
                    committed = consumers[group].committed([TopicPartition(topic, p) for p in ends], timeout=5)
                except Exception as exc:  # noqa: BLE001 - a sampler must not stop the platform
                    log.warning("lag sample of %s on %s failed: %s", group, topic, exc)
                    continue
                for tp in committed:
                    end = ends.get(tp.partition, 0)
                    offset = tp.offset if tp.offset >= 0 else -1
                    lag = end - (offset if offset >= 0 else 0)
                    rows.append([sampled, group, topic, tp.partition, end, offset, max(0, lag)])
            if rows:
                factory().insert("consumer_lag", rows, column_names=list(LAG_COLUMNS))
            stop.wait(every_s)
    finally:
        for consumer in consumers.values():
            consumer.close()
