"""The metric dataflow (Bytewax): transcripts -> per-submission metrics and per-learner windows in ClickHouse.

::

    speech.transcripts.v1 ─▶ score ─┬─▶ errors ─▶ speech.transcripts.v1.dlq
                                     └─▶ scored ─┬─▶ submission_metrics
                                                 ▼
    cdc.public.learners ─▶ timezone changes ─▶ assign_timezone (keyed by user: timezone history)
                                                 ▼
                          learner_windows (keyed by user + timezone: event-time clock on local time;
                          daily, weekly, sliding 7-day) ─┬─▶ learner_metrics_windows
                                                         └─▶ late ─▶ late_events

* **Event time.** Windows follow ``occurred_at`` of each ``TranscriptCreated``, as local wall-clock time in the
  learner's timezone (:mod:`flows.calendar`), with a per-learner watermark and ``allowed_lateness_s`` of
  lateness (:mod:`flows.windowing`). Windows are emitted when they close; a submission behind its learner's
  watermark is written to ``late_events`` for each window it missed (it is in ``submission_metrics`` anyway).
* **Timezones.** The learner's timezone history is the state of the ``assign_timezone`` step, fed by the
  learners' CDC stream and seeded, for learners it has no state for, from the CDC topic read to its end when
  the run starts (so the first transcripts of a replay do not race the CDC events).
* **Recovery.** Bytewax snapshots every ``epoch_interval_s`` into the recovery directory; a restart (after a
  crash or a stop) resumes from the last snapshot. The ClickHouse sinks flush at every snapshot (the live flow's
  also after every batch, ``sink_write_through``, so results do not wait for the snapshot) and writes are
  idempotent (:mod:`flows.clickhouse_sink`), so resuming never double-counts.
* **Errors as a stream.** A transcript that cannot be decoded or scored goes to ``speech.transcripts.v1.dlq``, a
  learners' change event that cannot be parsed to ``cdc.public.learners.dlq``, each with its error class and
  reason; the flow keeps going.

Entry points: :func:`run_metrics_flow` (the live flow, blocking; what ``coach run`` runs in a thread) and
:func:`build_metrics_flow` (also used by replays, :mod:`flows.replay`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators.windowing import window
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from bytewax.testing import run_main
from clickhouse_connect.driver.client import Client

from flows import step_ids as ids
from flows.aggregate import window_rows
from flows.calendar import (
    LearnerCalendar,
    TimezoneChange,
    TimezoneHistory,
    parse_learner_change,
    valid_timezone,
)
from flows.clickhouse_sink import ClickHouseSink, SinkRow, check_columns
from flows.dead_letters import DeadLetterSink
from flows.kafka_source import KafkaPartitionSource, SourceProgress, end_offsets
from flows.metrics import METRICS_VERSION
from flows.records import Scored, SourceMessage, WindowItem, dead_letter, late_row, score_batch, submission_row
from flows.settings import FlowSettings
from flows.tables import LATE_COLUMNS, SUBMISSION_COLUMNS, WINDOW_COLUMNS, TableNames
from flows.windowing import LearnerClock, LearnerWindower, collect_items
from runtime.clickhouse import get_clickhouse_client
from runtime.garbage_collector import freeze_startup_objects, raise_young_threshold
from runtime.settings import PlatformSettings
from schemas.dead_letter import DeadLetterRecord, PoisonMessage
from schemas.topics import ConsumerGroups

__all__ = [
    "FlowStats",
    "assign_timezones",
    "build_metrics_flow",
    "default_recovery_dir",
    "ensure_cdc_topic",
    "learner_windows",
    "load_timezones",
    "prepare_recovery_dir",
    "run_metrics_flow",
]

log = logging.getLogger(__name__)

_KEY_SEPARATOR = "\x1f"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FlowStats:
    """Per-learner counts of one run, kept in memory for a replay's verification (thread-safe).

    Keys are the Kafka message keys (``user_id``). ``scored``: messages scored; ``dead_letters``: messages
    sent to the DLQ; ``submissions``: distinct ``submission_id`` of the scored ones; ``rows``: rows inserted
    per table.
    """

    scored: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    submissions: dict[str, set[str]] = field(default_factory=dict)
    rows: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_scored(self, scored: Scored) -> None:
        """Count one scored transcript."""
        with self._lock:
            self.scored[scored.user_id] += 1
            self.submissions.setdefault(scored.user_id, set()).add(scored.submission_id)

    def count_dead_letter(self, record: DeadLetterRecord) -> None:
        """Count one dead letter (by its original key)."""
        with self._lock:
            self.dead_letters[record.original_key or ""] += 1

    def count_rows(self, table: str, rows: int) -> None:
        """Count rows inserted into ``table``."""
        with self._lock:
            self.rows[table] += rows

    def scored_total(self) -> int:
        """Messages scored so far, all learners together (safe to call while the flow runs)."""
        with self._lock:
            return sum(self.scored.values())


# ------------------------------------------------------------------------------------------------ timezones


def ensure_cdc_topic(platform: PlatformSettings, topic: str = ids.LEARNERS_CDC_TOPIC) -> None:
    """Create the learners' CDC topic if Debezium has not yet (1 partition, kept forever, like the topics
    Debezium creates), so the flow can subscribe before the connector's first snapshot."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": platform.bootstrap_servers})
    if topic in admin.list_topics(timeout=30).topics:
        return
    futures = admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=1, replication_factor=platform.kafka_replication, config={"retention.ms": "-1"}
            )
        ]
    )
    for future in futures.values():
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - created concurrently by Debezium is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def load_timezones(
    platform: PlatformSettings,
    *,
    topic: str = ids.LEARNERS_CDC_TOPIC,
    until: Mapping[int, int] | None = None,
    default_timezone: str = "UTC",
    timeout_s: float = 60.0,
) -> dict[str, TimezoneHistory]:
    """Read the learners' CDC topic from the beginning to ``until`` (default: its end now) into timezone
    histories per ``user_id``. Raises ``TimeoutError`` if the end is not reached within ``timeout_s``."""
    from confluent_kafka import Consumer, TopicPartition

    until = dict(until) if until is not None else end_offsets(platform.bootstrap_servers, topic)
    histories: dict[str, TimezoneHistory] = {}
    pending = {partition: end for partition, end in until.items() if end > 0}
    if not pending:
        return histories
    consumer = Consumer(
        {
            "bootstrap.servers": platform.bootstrap_servers,
            "group.id": f"{ConsumerGroups.METRICS_FLOW}.timezones",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, 0) for partition in pending])
        deadline = _utc_now() + timedelta(seconds=timeout_s)
        while pending:
            if _utc_now() > deadline:
                raise TimeoutError(f"reading {topic} to its end offsets {until} took over {timeout_s} s")
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                partition, offset = message.partition(), message.offset()
                if partition is None or offset is None:
                    continue
                if partition in pending and offset < pending[partition]:
                    try:
                        change = parse_learner_change(message.value(), default_timezone=default_timezone)
                    except PoisonMessage:  # the flow's CDC stream dead-letters it when it reads it
                        change = None
                    if change is not None:
                        histories.setdefault(change.user_id, TimezoneHistory()).apply(change)
                if partition in pending and offset + 1 >= pending[partition]:
                    del pending[partition]
            for partition in list(pending):
                position = consumer.position([TopicPartition(topic, partition)])[0].offset
                if position >= pending[partition]:
                    del pending[partition]
    finally:
        consumer.close()
    return histories


def assign_timezones(
    scored: Stream[tuple[str, Scored]],
    changes: Stream[tuple[str, TimezoneChange]],
    *,
    preload: Mapping[str, TimezoneHistory] | None = None,
    default_timezone: str = "UTC",
) -> Stream[tuple[str, WindowItem]]:
    """Place each scored transcript (keyed by ``user_id``) in its learner's timezone; re-key by learner and
    timezone (the windows' key). ``changes`` update the per-learner :class:`TimezoneHistory` state, which
    starts from ``preload`` for a learner without state."""
    preload = preload or {}
    default_timezone = valid_timezone(default_timezone)

    def assign(state: TimezoneHistory | None, value: object) -> tuple[TimezoneHistory | None, tuple[WindowItem, ...]]:
        if not isinstance(value, Scored | TimezoneChange):
            raise TypeError(f"assign_timezones got {type(value).__name__}")
        if state is None and value.user_id in preload:
            known = preload[value.user_id]
            state = TimezoneHistory(known.changes, known.limit)
        if isinstance(value, TimezoneChange):
            state = state if state is not None else TimezoneHistory()
            state.apply(value)
            return state, ()
        timezone = (state.at(value.occurred_at) if state is not None else None) or default_timezone
        return state, (WindowItem.of(value, timezone),)

    merged = op.merge(ids.STEP_MERGE_TIMEZONES, changes, scored)
    placed = op.stateful_flat_map(ids.STEP_ASSIGN_TIMEZONE, merged, assign)
    return op.map(
        ids.STEP_KEY_WINDOWS,
        placed,
        lambda key_item: (f"{key_item[1].user_id}{_KEY_SEPARATOR}{key_item[1].timezone}", key_item[1]),
    )


# -------------------------------------------------------------------------------------------------- windows


def learner_windows(
    items: Stream[tuple[str, WindowItem]],
    *,
    calendar: LearnerCalendar,
    clock: LearnerClock,
    now: Callable[[], datetime] = _utc_now,
) -> tuple[Stream[tuple[str, SinkRow]], Stream[tuple[str, SinkRow]]]:
    """Fold each learner's items into daily, weekly and sliding 7-day windows.

    Returns ``(window rows, late rows)`` as keyed :data:`~flows.clickhouse_sink.SinkRow` streams for
    ``learner_metrics_windows`` and ``late_events``.
    """
    out = window(ids.STEP_WINDOWS, items, clock, LearnerWindower(calendar), collect_items, ordered=False)

    def to_window_rows(batch: list[tuple[str, tuple[int, list[WindowItem]]]]) -> list[tuple[str, SinkRow]]:
        # The whole batch of closed windows at once: their vocabulary is computed together (flows.vocabulary).
        closed = [
            (collected[0].user_id, collected[0].timezone, calendar.bounds(window_id), collected)
            for _key, (window_id, collected) in batch
        ]
        out = []
        for (key, (window_id, collected)), row in zip(batch, window_rows(closed, now()), strict=True):
            last = max((item.source_partition, item.source_offset) for item in collected)
            out.append((key, (row, f"{key}|{window_id}|{last[0]}:{last[1]}|{len(collected)}")))
        return out

    def to_late_row(key_late: tuple[str, tuple[int, WindowItem]]) -> tuple[str, SinkRow]:
        key, (window_id, item) = key_late
        row = late_row(item, calendar.bounds(window_id), now())
        return key, (row, f"{item.position}|{window_id}")

    return (
        op.flat_map_batch(ids.STEP_WINDOW_ROWS, out.down, to_window_rows),
        op.map(ids.STEP_LATE_ROWS, out.late, to_late_row),
    )


# --------------------------------------------------------------------------------------------- whole flow


def build_metrics_flow(
    settings: FlowSettings,
    platform: PlatformSettings,
    tables: TableNames,
    *,
    replay: bool = False,
    stop_at: Mapping[str, Mapping[int, int]] | None = None,
    stop_event: threading.Event | None = None,
    progress: SourceProgress | None = None,
    stats: FlowStats | None = None,
    timezones: Mapping[str, TimezoneHistory] | None = None,
    client_factory: Callable[[], Client] | None = None,
) -> Dataflow:
    """The metric dataflow, reading Kafka per ``platform`` and writing to ``tables``.

    ``replay``: event-time-only watermark and every window closed at the end of the input (deterministic),
    instead of the live clock; ``stop_at``: ``{topic: {partition: end offset}}`` at which the sources end
    (``None``: tail forever); ``stop_event``: ends the sources gracefully; ``progress``/``stats``: shared
    counters; ``timezones``: seed of the timezone step (see :func:`load_timezones`); ``client_factory``:
    the ClickHouse client (default: a private :func:`runtime.clickhouse.get_clickhouse_client` on
    ``tables.database`` for each sink partition, since a clickhouse-connect client is not shared between threads).
    """
    factory = client_factory or (lambda: get_clickhouse_client(platform, database=tables.database, new=True))
    flow = Dataflow(ids.FLOW_ID)
    bootstrap = platform.bootstrap_servers

    def source(topic: str) -> KafkaPartitionSource:
        return KafkaPartitionSource(
            topic,
            bootstrap=bootstrap,
            group_id=ConsumerGroups.METRICS_FLOW,
            stop_at=None if stop_at is None else stop_at.get(topic, {}),
            stop_event=stop_event,
            progress=progress,
            batch_size=settings.source_batch_size,
            idle_poll_s=settings.idle_poll_s,
        )

    def sink(table: str, columns: tuple[str, ...]) -> ClickHouseSink:
        return ClickHouseSink(
            tables.qualified(table),
            columns,
            client_factory=factory,
            batch_rows=settings.sink_batch_rows,
            retries=settings.insert_retries,
            on_flush=stats.count_rows if stats is not None else None,
            write_through=settings.sink_write_through and not replay,
        )

    threshold = settings.pause_threshold_s

    def score_messages(messages: list[SourceMessage]) -> list[Scored | DeadLetterRecord]:
        # A whole batch of the source at once: the metrics of its transcripts are computed together.
        results = score_batch(messages, pause_threshold_s=threshold)
        if stats is not None:
            for result in results:
                if isinstance(result, Scored):
                    stats.count_scored(result)
        return results

    transcripts = op.input(ids.STEP_TRANSCRIPTS_IN, flow, source(settings.transcripts_topic))
    results = op.flat_map_batch(ids.STEP_SCORE, transcripts, score_messages)
    split = op.branch(ids.STEP_SPLIT_ERRORS, results, lambda result: isinstance(result, Scored))
    scored: Stream[Scored] = split.trues  # type: ignore[assignment]
    errors: Stream[DeadLetterRecord] = split.falses  # type: ignore[assignment]

    def to_submission_row(s: Scored) -> tuple[str, SinkRow]:
        return s.user_id, (submission_row(s, _utc_now()), f"{s.source_topic}:{s.source_partition}:{s.source_offset}")

    submission_rows = op.map(ids.STEP_SUBMISSION_ROWS, scored, to_submission_row)
    op.output(ids.STEP_SUBMISSIONS_OUT, submission_rows, sink(tables.submission_metrics, SUBMISSION_COLUMNS))

    default_timezone = valid_timezone(settings.default_timezone)

    def parse_change(message: SourceMessage) -> tuple[str, TimezoneChange] | DeadLetterRecord | None:
        try:
            change = parse_learner_change(message.value, default_timezone=default_timezone)
        except PoisonMessage as poison:
            return dead_letter(message, poison)
        return None if change is None else (change.user_id, change)

    parsed_changes = op.filter_map(
        ids.STEP_PARSE_CDC, op.input(ids.STEP_CDC_IN, flow, source(settings.learners_topic)), parse_change
    )
    split_changes = op.branch(
        ids.STEP_SPLIT_CDC_ERRORS, parsed_changes, lambda item: not isinstance(item, DeadLetterRecord)
    )
    changes: Stream[tuple[str, TimezoneChange]] = split_changes.trues  # type: ignore[assignment]
    cdc_errors: Stream[DeadLetterRecord] = split_changes.falses  # type: ignore[assignment]
    op.output(
        ids.STEP_DEAD_LETTERS_OUT,
        op.merge(ids.STEP_MERGE_ERRORS, errors, cdc_errors),
        DeadLetterSink(
            platform,
            client_id=f"{ConsumerGroups.METRICS_FLOW}.dlq",
            on_write=stats.count_dead_letter if stats is not None else None,
        ),
    )
    keyed = op.key_on(ids.STEP_KEY_SCORED, scored, lambda s: s.user_id)
    items = assign_timezones(keyed, changes, preload=timezones, default_timezone=default_timezone)
    clock = LearnerClock(
        timedelta(seconds=settings.allowed_lateness_s), follow_system_time=not replay, close_at_eof=replay
    )
    window_rows, late_rows = learner_windows(items, calendar=LearnerCalendar(settings.week_start), clock=clock)
    op.output(ids.STEP_WINDOWS_OUT, window_rows, sink(tables.learner_metrics_windows, WINDOW_COLUMNS))
    op.output(ids.STEP_LATE_OUT, late_rows, sink(tables.late_events, LATE_COLUMNS))
    return flow


# ---------------------------------------------------------------------------------------------------- running


def default_recovery_dir(platform: PlatformSettings, settings: FlowSettings) -> Path:
    """The live flow's recovery directory: ``<COACH_HOME>/flows/recovery/metrics-v<METRICS_VERSION>-s<STATE_VERSION>``
    (a new metric definition or state layout starts from a fresh state)."""
    if settings.recovery_dir is not None:
        return settings.recovery_dir
    return platform.home_dir / "flows" / "recovery" / f"{ids.FLOW_ID}-v{METRICS_VERSION}-s{ids.STATE_VERSION}"


def prepare_recovery_dir(directory: Path, partitions: int) -> RecoveryConfig:
    """Create and initialise a Bytewax recovery database in ``directory`` unless it has one already."""
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, partitions)
    return RecoveryConfig(str(directory))


def execute(flow: Dataflow, settings: FlowSettings, recovery: RecoveryConfig | None, epoch_interval_s: float) -> None:
    """Run ``flow`` in this thread: one worker (``run_main``) or ``settings.workers`` worker threads.

    First tunes the process's garbage collector for a large, long-lived window state
    (:mod:`runtime.garbage_collector`: startup objects frozen, young threshold ``settings.gc_young_threshold``)."""
    freeze_startup_objects()
    raise_young_threshold(settings.gc_young_threshold)
    interval = timedelta(seconds=epoch_interval_s)
    if settings.workers == 1:
        run_main(flow, epoch_interval=interval, recovery_config=recovery)
    else:
        cli_main(flow, workers_per_process=settings.workers, epoch_interval=interval, recovery_config=recovery)


def run_metrics_flow(
    stop_event: threading.Event | None = None,
    *,
    settings: FlowSettings | None = None,
    platform: PlatformSettings | None = None,
    database: str | None = None,
    stop_at_end: bool = False,
    recovery_dir: Path | None = None,
    stats: FlowStats | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the live metric dataflow in the calling thread until ``stop_event`` is set.

    This is what ``coach run`` runs (in a thread; in the local mode in the same process as the progress API,
    because chDB opens its data directory in one process only; the ClickHouse client is shared through
    :func:`runtime.clickhouse.get_clickhouse_client`). Setting ``stop_event`` ends it gracefully within about
    ``idle_poll_s``: the final epoch is snapshotted, open windows included, and the next run resumes there.
    ``stop_at_end``: also stop once the end offsets of the input topics as of the start are reached (tests,
    benchmarks). ``database`` defaults to ``COACH_CLICKHOUSE_DATABASE``; ``recovery_dir`` to
    :func:`default_recovery_dir`; ``stats``: counters of what this run scored and inserted (benchmarks);
    ``on_ready``: called once its tables are checked and the flow starts (``coach run``'s readiness).

    Raises ``RuntimeError`` (``BytewaxRuntimeError``) when the flow fails, e.g. ClickHouse stays unreachable
    after the sink's retries; the caller may restart it, and it resumes from the last snapshot.
    """
    settings = settings or FlowSettings()
    platform = platform or PlatformSettings()
    tables = TableNames(database or platform.clickhouse_database)
    ensure_cdc_topic(platform, settings.learners_topic)
    stop_at = None
    if stop_at_end:
        stop_at = {
            topic: end_offsets(platform.bootstrap_servers, topic)
            for topic in (settings.transcripts_topic, settings.learners_topic)
        }
    timezones = load_timezones(
        platform,
        topic=settings.learners_topic,
        until=None if stop_at is None else stop_at[settings.learners_topic],
        default_timezone=settings.default_timezone,
    )
    recovery = prepare_recovery_dir(
        recovery_dir or default_recovery_dir(platform, settings), settings.recovery_partitions
    )
    flow = build_metrics_flow(
        settings,
        platform,
        tables,
        stop_at=stop_at,
        stop_event=stop_event,
        timezones=timezones,
        stats=stats,
    )
    client = get_clickhouse_client(platform, database=tables.database, new=True)
    for table, columns in (
        (tables.submission_metrics, SUBMISSION_COLUMNS),
        (tables.learner_metrics_windows, WINDOW_COLUMNS),
        (tables.late_events, LATE_COLUMNS),
    ):
        check_columns(client, tables.qualified(table), columns)  # fail at start, not at the first transcript
    del client  # not closed: with chDB, closing a handle may stop the process's one engine
    log.info("metric dataflow starting (tables in %s, recovery in %s)", tables.database, recovery.db_dir)
    if on_ready is not None:
        on_ready()
    execute(flow, settings, recovery, settings.epoch_interval_s)
    log.info("metric dataflow stopped")
