"""Settings of the metric dataflows (environment variables with the ``COACH_FLOWS_`` prefix).

Where Kafka and ClickHouse are comes from :class:`runtime.settings.PlatformSettings`; this class holds only the
dataflows' own knobs. Changing ``allowed_lateness_s`` or ``week_start`` changes which window a submission lands
in: like a metric definition change, it calls for a replay (``coach replay metrics --version N``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.step_ids import LEARNERS_CDC_TOPIC, TRANSCRIPTS_TOPIC

__all__ = ["FlowSettings"]


class FlowSettings(BaseSettings):
    """Knobs of the metric dataflows (``flows.dataflow``) and of replays (``flows.replay``)."""

    model_config = SettingsConfigDict(
        env_prefix="COACH_FLOWS_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    transcripts_topic: str = TRANSCRIPTS_TOPIC
    """topic of TranscriptCreated events; its dead letters go to <topic>.dlq"""
    learners_topic: str = LEARNERS_CDC_TOPIC
    """Debezium change events of the learners table (timezones)"""
    allowed_lateness_s: float = Field(default=2 * 3600.0, ge=0)
    """how far (seconds of event time) a learner's submission may trail the latest one seen for that learner and still
    land in its windows; older ones go to late_events. The watermark is (latest occurred_at seen) - lateness, advancing
    with system time in the live flow. At least 1 h so that the repeated hour of a DST fall-back is not mistaken for
    late data (windows are computed on local wall-clock time)."""
    pause_threshold_s: float = Field(default=0.25, gt=0)
    """silent-pause threshold passed to compute_metrics, seconds"""
    workers: int = Field(default=1, ge=1, le=64)
    """Bytewax worker threads in this process (one GIL: more than 1 helps only while waiting on I/O; scale out with more
    processes on a ClickHouse server)"""
    epoch_interval_s: float = Field(default=5.0, gt=0)
    """seconds between recovery snapshots; the ClickHouse sinks flush at every snapshot, so without
    sink_write_through this is also the longest a row waits in a sink buffer"""
    replay_epoch_interval_s: float = Field(default=30.0, gt=0)
    """epoch length during a replay (fewer snapshots of a large window state)"""
    sink_batch_rows: int = Field(default=5000, ge=1)
    """a ClickHouse sink inserts as soon as it buffers this many rows (and at every epoch boundary)"""
    sink_write_through: bool = True
    """the live metric flow's ClickHouse sinks insert the rows of each batch Bytewax hands them at once, so a result
    waits for no epoch boundary (safe because its tables collapse a re-written row, see flows.clickhouse_sink);
    false: rows wait for sink_batch_rows or the next snapshot (up to epoch_interval_s). Replays always wait (fewer,
    larger inserts; nobody reads their tables before the swap)"""
    insert_retries: int = Field(default=5, ge=1)
    """attempts of one ClickHouse insert (same deduplication token) before the dataflow fails and restarts from its last
    snapshot"""
    source_batch_size: int = Field(default=1000, ge=1)
    """most Kafka messages one source partition hands to the dataflow at a time"""
    gc_young_threshold: int = Field(default=1_000_000, ge=0)
    """allocations between young collections of Python's garbage collector in a process running a dataflow (CPython's
    default is 700): above the tracked objects that one source batch keeps alive at once, so that a batch does not
    trigger young collections that traverse it (their cost in a replay: bench/RESULTS.md, Flows); 0 keeps the
    interpreter's setting"""
    idle_poll_s: float = Field(default=0.1, gt=0)
    """how long an idle Kafka source partition waits before polling again"""
    recovery_dir: Path | None = None
    """Bytewax recovery database of the live flow; default
    <COACH_HOME>/flows/recovery/metrics-v<METRICS_VERSION>-s<STATE_VERSION> (a new metric version or state layout starts
    from a fresh state)"""
    recovery_partitions: int = Field(default=1, ge=1)
    """partitions of a new recovery database"""
    week_start: int = Field(default=0, ge=0, le=6)
    """first day of weekly windows, 0 = Monday (ISO 8601) … 6 = Sunday"""
    default_timezone: str = "UTC"
    """IANA zone of a learner whose timezone is unknown or invalid"""

    @field_validator("recovery_dir")
    @classmethod
    def _absolute_recovery_dir(cls, value: Path | None) -> Path | None:
        """A relative path is made absolute once, when the settings load (never later, in another thread)."""
        return None if value is None else Path(os.path.abspath(value.expanduser()))
