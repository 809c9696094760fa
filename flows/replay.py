"""Replay/backfill of the metric dataflow into versioned tables, verified, then swapped in atomically.

``coach replay metrics --version N`` (:func:`replay_metrics`):

1. captures the end offsets of ``speech.transcripts.v1`` and ``cdc.public.learners`` (what the replay covers);
2. creates empty ``submission_metrics_vN``, ``learner_metrics_windows_vN`` and ``late_events_vN`` with the live
   tables' DDL (``CREATE TABLE … AS …``; a leftover ``_vN`` of an unfinished replay is dropped first);
3. runs the same dataflow (:func:`flows.dataflow.build_metrics_flow`) from the earliest offsets with an empty
   recovery directory, on event time only (deterministic: the same topics give the same rows), until the
   captured end offsets, closing every window at the end of the input;
4. verifies, per learner, the rows against what was read from the source topic (see :func:`verify`);
5. swaps each table in with ``EXCHANGE TABLES live AND live_vN`` (atomic per table on the Atomic database
   engine, which chDB and ClickHouse servers use by default) and keeps what was live as
   ``<table>_before_vN`` — until ``--drop-old`` (or ``coach replay drop-old --version N``);
   ``coach replay rollback --version N`` exchanges them back.

If ``EXCHANGE`` is not supported (an ``Ordinary`` database), the swap falls back to one ``RENAME TABLE live TO
live_before_vN, live_vN TO live`` per table, during which a reader may briefly miss the table.

Caveats. The three tables are swapped one after the other (each swap is atomic, the set is not). Metric rows of
events produced after the captured end offsets are written by the live flow into the tables that are live at
that moment: run the replay with the live flow stopped (with embedded chDB that is required anyway — one
process per data directory), then start it again; after a ``METRICS_VERSION`` bump the live flow starts from a
fresh recovery directory and rewrites identical rows. A replay's last, still-open windows (e.g. today) are
written as they are at the end of the input; the live flow replaces them when they close.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, TopicPartition

from flows import step_ids as ids
from flows.calendar import KIND_ORDER, WindowKind
from flows.dataflow import (
    FlowStats,
    build_metrics_flow,
    ensure_cdc_topic,
    execute,
    load_timezones,
    prepare_recovery_dir,
)
from flows.kafka_source import SourceProgress, end_offsets
from flows.metrics import METRICS_VERSION
from flows.settings import FlowSettings
from flows.tables import METRIC_TABLES, REPLAYS, TableNames, before_version
from runtime.clickhouse import get_clickhouse_client
from runtime.settings import PlatformSettings

__all__ = [
    "Check",
    "ReplayError",
    "ReplayReport",
    "drop_old_tables",
    "replay_metrics",
    "rollback",
    "swap_in",
    "verify",
]

ProgressCallback = Callable[[int, int], None]
"""Called with ``(offsets consumed, offsets to consume)`` while a replay runs."""

_SLIDING_WINDOWS_PER_SUBMISSION = 7


class ReplayError(RuntimeError):
    """A replay could not run, or its result failed verification (the live tables are untouched)."""


@dataclass(frozen=True)
class Check:
    """One verification: its name, whether it passed, and a human-readable detail."""

    name: str
    ok: bool
    detail: str


@dataclass
class ReplayReport:
    """What a replay did: the target tables, the offsets covered, counts, checks, and whether it swapped."""

    version: int
    metrics_version: int
    tables: TableNames
    end_offsets: dict[str, dict[int, int]]
    messages: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    swapped: bool = False
    dropped_old: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return bool(self.checks) and all(check.ok for check in self.checks)


def _table_exists(client: Client, database: str, table: str) -> bool:
    rows = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {name:String}",
        parameters={"db": database, "name": table},
    ).result_rows
    return bool(rows and rows[0][0])


def _low_offsets(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "flows-replay-offsets"})
    try:
        return {
            partition: max(int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[0]), 0)
            for partition in partitions
        }
    finally:
        consumer.close()


def _counts(client: Client, sql: str) -> dict[Any, int]:
    result: dict[Any, int] = {}
    for row in client.query(sql).result_rows:
        *key, value = row
        result[key[0] if len(key) == 1 else tuple(key)] = int(value)
    return result


def _mismatches(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    users = sorted(set(expected) | set(actual))
    return [
        f"{u}: expected {expected.get(u, 0)}, got {actual.get(u, 0)}"
        for u in users
        if expected.get(u, 0) != actual.get(u, 0)
    ]


def _check(name: str, expected: dict[str, int], actual: dict[str, int], what: str) -> Check:
    bad = _mismatches(expected, actual)
    if not bad:
        return Check(name, True, f"{len(expected)} learners, {sum(expected.values())} {what}")
    shown = "; ".join(bad[:5]) + (f"; … {len(bad) - 5} more" if len(bad) > 5 else "")
    return Check(name, False, f"{len(bad)} learners differ: {shown}")


def verify(
    client: Client,
    tables: TableNames,
    *,
    stop_at: dict[str, dict[int, int]],
    lows: dict[str, dict[int, int]],
    transcripts_topic: str,
    progress: SourceProgress,
    stats: FlowStats,
) -> list[Check]:
    """Check a finished replay's tables against what was read from the source topic, per learner.

    * the sources reached every captured end offset;
    * every transcript message read for a key (the ``user_id``) was scored or dead-lettered;
    * ``submission_metrics`` holds one row per distinct submission scored;
    * daily and weekly windows, plus the submissions late for them, count each submission once, the sliding
      windows seven times (exact without duplicate transcripts; a second transcript of a submission may be
      counted once more, e.g. in a window and as late, so the check accepts up to the number of transcripts).
    """
    checks: list[Check] = []
    next_offsets, _ = progress.snapshot()
    short = [
        f"{topic}[{partition}] at {next_offsets.get((topic, partition), lows[topic][partition])} of {end}"
        for topic, ends in stop_at.items()
        for partition, end in ends.items()
        if next_offsets.get((topic, partition), lows[topic][partition]) < end
    ]
    partitions = sum(map(len, stop_at.values()))
    checks.append(Check("end offsets reached", not short, "; ".join(short) if short else f"{partitions} partitions"))
    read = {key: n for (topic, key), n in progress.messages_by_key.items() if topic == transcripts_topic}
    handled = Counter(stats.scored)
    handled.update(stats.dead_letters)
    checks.append(_check("every message scored or dead-lettered", read, dict(handled), "messages"))

    distinct = {user: len(submissions) for user, submissions in stats.submissions.items()}
    db = tables.database
    rows = _counts(client, f"SELECT user_id, count() FROM {db}.{tables.submission_metrics} FINAL GROUP BY user_id")
    checks.append(_check("submission_metrics: one row per submission", distinct, rows, "submissions"))

    windowed = _counts(
        client,
        f"SELECT user_id, window_kind, sum(submissions) FROM {db}.{tables.learner_metrics_windows} FINAL "
        "GROUP BY user_id, window_kind",
    )
    late_distinct = _counts(
        client,
        f"SELECT user_id, window_kind, uniqExact(submission_id) FROM {db}.{tables.late_events} FINAL "
        "GROUP BY user_id, window_kind",
    )
    late_rows = _counts(
        client,
        f"SELECT user_id, window_kind, count() FROM {db}.{tables.late_events} FINAL GROUP BY user_id, window_kind",
    )
    scored = dict(stats.scored)
    for kind in KIND_ORDER:
        per = _SLIDING_WINDOWS_PER_SUBMISSION if kind is WindowKind.SLIDING_7D else 1
        late = late_rows if kind is WindowKind.SLIDING_7D else late_distinct
        actual: Counter[str] = Counter()
        for (user, window_kind), n in [*windowed.items(), *late.items()]:
            if window_kind == kind.value:
                actual[user] += n
        bad = [
            f"{user}: {actual.get(user, 0)} not in [{per * n}, {per * scored.get(user, 0)}]"
            for user, n in sorted(distinct.items())
            if not per * n <= actual.get(user, 0) <= per * scored.get(user, 0)
        ]
        bad += [f"{user}: {n} for no submission" for user, n in sorted(actual.items()) if user not in distinct]
        name = f"{kind.value} windows + late cover every submission"
        shown = "; ".join(bad[:5]) + (f"; … {len(bad) - 5} more" if len(bad) > 5 else "")
        total = sum(actual.values())
        checks.append(Check(name, not bad, shown or f"{len(distinct)} learners, {total} window slots"))
    return checks


def _exchange(client: Client, database: str, live: str, target: str, version: int) -> str:
    before = before_version(live, version)
    try:
        client.command(f"EXCHANGE TABLES {database}.{live} AND {database}.{target}")
        client.command(f"RENAME TABLE {database}.{target} TO {database}.{before}")
        return "exchange"
    except Exception as exc:  # noqa: BLE001 - fall back only when EXCHANGE itself is unsupported
        if "EXCHANGE" not in str(exc).upper() and "NOT_IMPLEMENTED" not in str(exc).upper():
            raise
    client.command(f"RENAME TABLE {database}.{live} TO {database}.{before}, {database}.{target} TO {database}.{live}")
    return "rename"


def swap_in(client: Client, database: str, version: int) -> list[str]:
    """Swap the ``_v<version>`` tables in (see the module docstring). Returns how each was swapped."""
    target = TableNames.for_version(database, version)
    return [
        _exchange(client, database, live, new, version) for live, new in zip(METRIC_TABLES, target.all(), strict=True)
    ]


def rollback(client: Client, database: str, version: int) -> None:
    """Put back the tables that were live before version ``version`` was swapped in (and keep the replayed ones
    as ``<table>_before_v<version>``: running it again undoes the rollback). Raises :class:`ReplayError` when
    they are gone."""
    for live in METRIC_TABLES:
        if not _table_exists(client, database, before_version(live, version)):
            raise ReplayError(f"{database}.{before_version(live, version)} does not exist (dropped, or never swapped)")
    for live in METRIC_TABLES:
        client.command(f"EXCHANGE TABLES {database}.{live} AND {database}.{before_version(live, version)}")


def drop_old_tables(client: Client, database: str, version: int) -> list[str]:
    """Drop the ``<table>_before_v<version>`` tables kept by a swap. Returns the names dropped."""
    dropped = []
    for live in METRIC_TABLES:
        name = before_version(live, version)
        if _table_exists(client, database, name):
            client.command(f"DROP TABLE {database}.{name} SYNC")
            dropped.append(name)
    return dropped


def _record(client: Client, database: str, report: ReplayReport, status: str, started: datetime, detail: str) -> None:
    client.insert(
        f"{database}.{REPLAYS}",
        [
            [
                ids.FLOW_ID,
                report.version,
                report.metrics_version,
                status,
                started,
                datetime.now(UTC),
                json.dumps({t: {str(p): o for p, o in ends.items()} for t, ends in report.end_offsets.items()}),
                report.messages,
                {k: int(v) for k, v in report.rows.items()},
                detail[:10_000],
            ]
        ],
        column_names=[
            "flow",
            "version",
            "metrics_version",
            "status",
            "started_at",
            "finished_at",
            "end_offsets",
            "messages",
            "rows",
            "detail",
        ],  # fmt: skip
    )


def replay_metrics(
    version: int,
    *,
    drop_old: bool = False,
    swap: bool = True,
    settings: FlowSettings | None = None,
    platform: PlatformSettings | None = None,
    database: str | None = None,
    on_progress: ProgressCallback | None = None,
    poll_s: float = 0.25,
) -> ReplayReport:
    """Rebuild the metric tables as version ``version`` from the earliest offsets, verify, swap in.

    ``swap=False`` stops after verification (the ``_v<version>`` tables stay for inspection); ``drop_old``
    drops the replaced tables after a successful swap. ``on_progress`` is called every ``poll_s`` seconds.
    Returns the report (``report.ok`` false and nothing swapped when a check failed). Raises
    :class:`ReplayError` when the live tables are missing (run ``coach migrate``), when version ``version``
    was already swapped in (its ``_before_v<version>`` tables exist), or when the dataflow fails.
    """
    # One worker: the verification counters live in this process.
    settings = (settings or FlowSettings()).model_copy(update={"workers": 1})
    platform = platform or PlatformSettings()
    database = database or platform.clickhouse_database
    started = datetime.now(UTC)
    clock = time.monotonic()
    try:
        client = get_clickhouse_client(platform, database=database)
    except Exception as exc:  # noqa: BLE001
        raise ReplayError(
            f"cannot open ClickHouse at {platform.clickhouse_dsn}: {exc} (with embedded chDB, stop `coach run` "
            "first: one process at a time may open its data directory)"
        ) from exc
    live = TableNames(database)
    target = TableNames.for_version(database, version)
    for table in live.all():
        if not _table_exists(client, database, table):
            raise ReplayError(f"{database}.{table} does not exist: run `coach migrate` first")
        if _table_exists(client, database, before_version(table, version)):
            raise ReplayError(
                f"version {version} was already swapped in ({database}.{before_version(table, version)} exists): "
                "replay with a higher --version, or drop the old tables first (coach replay drop-old)"
            )

    ensure_cdc_topic(platform, settings.learners_topic)
    bootstrap = platform.bootstrap_servers
    topics = (settings.transcripts_topic, settings.learners_topic)
    stop_at = {topic: end_offsets(bootstrap, topic) for topic in topics}
    lows = {topic: _low_offsets(bootstrap, topic, list(ends)) for topic, ends in stop_at.items()}
    total = sum(max(end - lows[topic][p], 0) for topic, ends in stop_at.items() for p, end in ends.items())
    report = ReplayReport(version, METRICS_VERSION, target, stop_at)

    for live_table, new_table in zip(live.all(), target.all(), strict=True):
        client.command(f"DROP TABLE IF EXISTS {database}.{new_table} SYNC")
        client.command(f"CREATE TABLE {database}.{new_table} AS {database}.{live_table}")

    recovery_dir = platform.home_dir / "flows" / "replay" / f"{ids.FLOW_ID}-v{version}"
    shutil.rmtree(recovery_dir, ignore_errors=True)
    recovery = prepare_recovery_dir(recovery_dir, 1)
    timezones = load_timezones(
        platform,
        topic=settings.learners_topic,
        until=stop_at[settings.learners_topic],
        default_timezone=settings.default_timezone,
    )
    progress, stats, stop = SourceProgress(), FlowStats(), threading.Event()
    flow = build_metrics_flow(
        settings,
        platform,
        target,
        replay=True,
        stop_at=stop_at,
        stop_event=stop,
        progress=progress,
        stats=stats,
        timezones=timezones,
        client_factory=lambda: client,
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            execute(flow, settings, recovery, settings.replay_epoch_interval_s)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(exc)

    def consumed() -> int:
        next_offsets, _ = progress.snapshot()
        return sum(
            max(min(next_offsets.get((topic, p), lows[topic][p]), end) - lows[topic][p], 0)
            for topic, ends in stop_at.items()
            for p, end in ends.items()
        )

    worker = threading.Thread(target=run, name=f"replay-{ids.FLOW_ID}-v{version}", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(poll_s)
            if on_progress is not None:
                on_progress(consumed(), total)
    except BaseException:
        stop.set()
        worker.join()
        _record(client, database, report, "failed", started, "interrupted")
        raise
    if on_progress is not None:
        on_progress(consumed(), total)
    report.messages = progress.snapshot()[1]
    report.rows = dict(stats.rows)
    if failure:
        _record(client, database, report, "failed", started, repr(failure[0]))
        raise ReplayError(f"the replay dataflow failed: {failure[0]}") from failure[0]
    shutil.rmtree(recovery_dir, ignore_errors=True)

    report.checks = verify(
        client,
        target,
        stop_at=stop_at,
        lows=lows,
        transcripts_topic=settings.transcripts_topic,
        progress=progress,
        stats=stats,
    )
    report.seconds = time.monotonic() - clock
    if not report.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.checks if not c.ok)
        _record(client, database, report, "failed", started, failed)
        return report
    if not swap:
        _record(client, database, report, "verified", started, "not swapped (--no-swap)")
        return report
    how = swap_in(client, database, version)
    report.swapped = True
    if drop_old:
        drop_old_tables(client, database, version)
        report.dropped_old = True
    report.seconds = time.monotonic() - clock
    _record(client, database, report, "swapped", started, f"swap: {', '.join(how)}; dropped old: {drop_old}")
    return report
