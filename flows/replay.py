"""Replay/backfill of the metric dataflow into versioned tables, verified, then swapped in, crash-safe.

``coach replay metrics --version N`` (:func:`replay_metrics`):

1. finishes or reverts a swap, rollback or drop-old that was interrupted (:func:`recover`, below) and creates
   empty ``submission_metrics_vN``, ``learner_metrics_windows_vN`` and ``late_events_vN`` with the live tables'
   DDL (``CREATE TABLE … AS …``; :func:`prepare_replay_tables`). Leftovers of an unfinished replay of version N
   are dropped first, but only tables known to be its own (their UUIDs in the swap journal, or empty), never a
   table that is or was live;
2. captures the end offsets of ``speech.transcripts.v1`` and ``cdc.public.learners`` (what the replay covers);
3. runs the same dataflow (:func:`flows.dataflow.build_metrics_flow`) from the earliest offsets with an empty
   recovery directory, on event time only (deterministic: the same topics give the same rows), until the
   captured end offsets, closing every window at the end of the input;
4. verifies, per learner, the rows against what was read from the source topic (see :func:`verify`);
5. swaps each table in (:func:`swap_in`) and keeps what was live as ``<table>_before_vN`` — until
   ``--drop-old`` (or ``coach replay drop-old --version N``); ``coach replay rollback --version N`` exchanges
   them back.

**The swap journal** (``flow_replay_swaps``, migration ``0006``). Every swap, rollback, drop-old (and the revert
of an interrupted swap) first writes its plan in one insert: per table, the UUID of the table at the live name
(``system.tables.uuid``: a table keeps it through ``RENAME`` and ``EXCHANGE``) and the UUID that must be there at
the end; then one row after each statement, then an end row. Per table the swap is ``RENAME <table>_vN TO
<table>_before_vN`` then ``EXCHANGE TABLES <table> AND <table>_before_vN``, each atomic on the Atomic database
engine (chDB's and ClickHouse servers' default; an Ordinary database is refused). So after a crash between any
two statements, every live table exists, and every previously live table is either live or
``<table>_before_vN`` — never under ``<table>_vN``, the name a rerun drops. Which statements ran is read from the
catalog (the UUIDs), not from the progress rows, so a crash between a statement and its journal row is handled
too. The next ``coach replay metrics|rollback|drop-old|recover`` calls :func:`recover` first: an interrupted swap
is **reverted** (the previous tables, a consistent set, are live again; a rerun then rebuilds), an interrupted
rollback or revert is completed, an interrupted drop-old is completed by ``drop-old`` itself (others refuse
until it is). One process at a time may swap (embedded chDB enforces it; with a server, do not run two).

Caveats. Each table's swap is atomic, the set is not: between the first and the last ``EXCHANGE`` a reader may see
new and old tables mixed (a crash there is undone by the recovery). Metric rows of events produced after the
captured end offsets are written by the live flow into the tables that are live at that moment: run the replay
with the live flow stopped (with embedded chDB that is required anyway — one process per data directory), then
start it again; after a ``METRICS_VERSION`` bump the live flow starts from a fresh recovery directory and
rewrites identical rows. A replay's last, still-open windows (e.g. today) are written as they are at the end of
the input; the live flow replaces them when they close. A ``<table>_vN`` left by a swap interrupted before the
journal existed (the old live table, after ``EXCHANGE`` and before ``RENAME``) is not in the journal and not empty:
the rerun refuses to drop it.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

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
from flows.tables import METRIC_TABLES, REPLAYS, SWAP_JOURNAL, TableNames, before_version, versioned
from runtime.clickhouse import get_clickhouse_client
from runtime.redaction import redact_dsn
from runtime.settings import PlatformSettings

__all__ = [
    "Check",
    "ReplayError",
    "ReplayReport",
    "StatementHook",
    "SwapOperation",
    "drop_old_tables",
    "prepare_replay_tables",
    "recover",
    "replay_metrics",
    "rollback",
    "swap_in",
    "swap_journal",
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
    """What a replay did: the target tables, the offsets covered, counts, checks, and whether it swapped.

    ``recovered``: what it finished or undid first (an interrupted swap reverted, leftover tables dropped).
    """

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
    recovered: list[str] = field(default_factory=list)

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


# --- the swap, crash-safe ------------------------------------------------------------------------------------------

StatementHook = Callable[[str], None]
"""Called after each statement of a swap, rollback, drop-old or recovery that changes the catalog or the journal,
with the statement (SQL, or ``INSERT INTO <journal> …``). Tests raise from it to simulate a crash there."""

_ZERO_UUID = UUID(int=0)
_BUILD, _SWAP, _ROLLBACK, _REVERT, _DROP_OLD = "build", "swap", "rollback", "revert", "drop_old"


@dataclass(frozen=True)
class SwapOperation:
    """One operation of the swap journal (``flow_replay_swaps``), as planned.

    ``sources`` maps each live table name to the UUID of the table there when the operation started (``drop_old``:
    the tables to drop, by live name); ``targets`` to the UUID that must be there when it ends (``build``: the
    ``<table>_vN`` a replay created, a record done as written). ``done`` once its end row was written.
    ``ref_op`` is, for a ``revert``, the ``op_id`` of the interrupted swap it undoes.
    """

    op_id: int
    version: int
    op: str
    ref_op: int
    sources: dict[str, UUID]
    targets: dict[str, UUID]
    done: bool = False


class _Journal:
    """Runs the swap's statements and writes the journal, calling the hook after each."""

    def __init__(self, client: Client, database: str, after_statement: StatementHook | None) -> None:
        self.client, self.database, self.after = client, database, after_statement
        self.table = f"{database}.{SWAP_JOURNAL}"

    def command(self, sql: str) -> None:
        self.client.command(sql)
        if self.after is not None:
            self.after(sql)

    def _insert(self, rows: list[list[Any]]) -> None:
        columns = [
            "flow",
            "version",
            "op_id",
            "op",
            "ref_op",
            "live_table",
            "state",
            "source_uuid",
            "target_uuid",
            "at",
        ]
        self.client.insert(self.table, rows, column_names=columns)
        if self.after is not None:
            self.after(f"INSERT INTO {self.table} ({', '.join(f'{r[5] or r[3]}: {r[6]}' for r in rows)})")

    def _row(self, op: SwapOperation, table: str, state: str, source: UUID, target: UUID) -> list[Any]:
        return [ids.FLOW_ID, op.version, op.op_id, op.op, op.ref_op, table, state, source, target, datetime.now(UTC)]

    def plan(
        self, version: int, op: str, sources: dict[str, UUID], targets: dict[str, UUID], ref_op: int = 0
    ) -> SwapOperation:
        """Write the plan of a new operation (one insert: all its rows or none) and return it."""
        last = self.client.query(f"SELECT max(op_id) FROM {self.table}").result_rows[0][0] or 0
        planned = SwapOperation(max(time.time_ns(), int(last) + 1), version, op, ref_op, sources, targets)
        self._insert(
            [
                self._row(planned, table, "planned", sources[table], targets.get(table, _ZERO_UUID))
                for table in METRIC_TABLES
                if table in sources
            ]
        )
        return planned

    def step(self, op: SwapOperation, table: str, state: str) -> None:
        """Record that a statement of ``op`` on ``table`` ran."""
        self._insert([self._row(op, table, state, _ZERO_UUID, _ZERO_UUID)])

    def done(self, op: SwapOperation) -> None:
        """Write the end row of ``op``."""
        self._insert([self._row(op, "", "done", _ZERO_UUID, _ZERO_UUID)])


def _require_journal(client: Client, database: str) -> None:
    if not _table_exists(client, database, SWAP_JOURNAL):
        raise ReplayError(f"{database}.{SWAP_JOURNAL} does not exist: run `coach migrate` first")


def swap_journal(client: Client, database: str) -> list[SwapOperation]:
    """The operations of the swap journal of ``database``, in the order they were planned.

    Raises :class:`ReplayError` when the journal table is missing (run ``coach migrate``).
    """
    _require_journal(client, database)
    rows = client.query(
        f"SELECT op_id, version, op, ref_op, live_table, state, source_uuid, target_uuid "
        f"FROM {database}.{SWAP_JOURNAL} WHERE flow = {{flow:String}} ORDER BY op_id, at",
        parameters={"flow": ids.FLOW_ID},
    ).result_rows
    ops: dict[int, SwapOperation] = {}
    for op_id, version, op, ref_op, table, state, source, target in rows:
        found = ops.setdefault(
            int(op_id), SwapOperation(int(op_id), int(version), str(op), int(ref_op), {}, {}, done=op == _BUILD)
        )
        if state == "planned":
            found.sources[table] = source
            if target != _ZERO_UUID:
                found.targets[table] = target
        elif state == "done":
            ops[int(op_id)] = replace(found, done=True)
    return list(ops.values())


def _uuids(client: Client, database: str, version: int) -> dict[str, UUID]:
    """``{name: uuid}`` of the live tables and their ``_vN`` and ``_before_vN`` names that exist."""
    names = [n for t in METRIC_TABLES for n in (t, versioned(t, version), before_version(t, version))]
    rows = client.query(
        "SELECT name, uuid FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
        parameters={"db": database, "names": names},
    ).result_rows
    return {str(name): uuid for name, uuid in rows}


def _require_uuids(uuids: dict[str, UUID], database: str) -> None:
    zero = sorted(name for name, uuid in uuids.items() if uuid == _ZERO_UUID)
    if zero:
        raise ReplayError(
            f"{database}.{zero[0]} has no table UUID (a database of the Ordinary engine?): the crash-safe swap "
            "needs the Atomic engine, the default of ClickHouse servers and chDB"
        )


def _make_live(
    journal: _Journal, version: int, kind: str, uuids: dict[str, UUID], target: Callable[[str, int], str]
) -> None:
    """Make the table named ``target(live, version)`` live in place of every live metric table, as one journaled
    operation ``kind`` (swap or rollback): planned, driven (:func:`_drive`), marked done. ``uuids``: table name ->
    UUID of every table involved. Raises :class:`ReplayError` as :func:`_require_uuids` and :func:`_drive` do."""
    _require_uuids(uuids, journal.database)
    op = journal.plan(
        version,
        kind,
        {live: uuids[live] for live in METRIC_TABLES},
        {live: uuids[target(live, version)] for live in METRIC_TABLES},
    )
    _drive(journal, version, op)
    journal.done(op)


def _drive(journal: _Journal, version: int, op: SwapOperation) -> None:
    """Bring every live table of ``op`` to its target UUID, from wherever it stands (idempotent, resumable).

    Per table, the target is either at ``<table>_before_vN`` (one ``EXCHANGE``) or, for the first swap, still at
    ``<table>_vN`` (``RENAME`` it to ``<table>_before_vN``, then ``EXCHANGE``): each statement is atomic and after
    each the live name holds a table and the other one is under ``<table>_before_vN``.
    """
    db = journal.database
    for live in METRIC_TABLES:
        want = op.targets[live]
        new, before = versioned(live, version), before_version(live, version)
        uuids = _uuids(journal.client, db, version)
        if uuids.get(live) == want:
            continue
        if uuids.get(live) != op.sources[live]:
            raise ReplayError(
                f"{db}.{live} is neither the table {op.op} {op.op_id} started from nor its target: "
                "the tables were changed by hand? Nothing more is swapped; see the swap journal"
            )
        if uuids.get(before) == want:
            journal.command(f"EXCHANGE TABLES {db}.{live} AND {db}.{before}")
            journal.step(op, live, "exchanged")
        elif uuids.get(new) == want and before not in uuids:
            journal.command(f"RENAME TABLE {db}.{new} TO {db}.{before}")
            journal.step(op, live, "renamed")
            journal.command(f"EXCHANGE TABLES {db}.{live} AND {db}.{before}")
            journal.step(op, live, "exchanged")
        else:
            raise ReplayError(f"the table to make live as {db}.{live} ({want}) is neither {before} nor {new}")


def _drop(journal: _Journal, version: int, op: SwapOperation) -> list[str]:
    """Drop the ``<table>_before_vN`` tables planned by a ``drop_old`` operation that are still there."""
    db, dropped = journal.database, []
    for live, doomed in op.sources.items():
        name = before_version(live, version)
        uuids = _uuids(journal.client, db, version)
        if uuids.get(live) == doomed:
            raise ReplayError(f"refusing to drop {db}.{name}: it is live as {db}.{live}")
        if uuids.get(name) == doomed:
            journal.command(f"DROP TABLE {db}.{name} SYNC")
            journal.step(op, live, "dropped")
            dropped.append(name)
        elif name in uuids:
            raise ReplayError(f"{db}.{name} is not the table drop-old {op.op_id} planned to drop; not dropped")
    return dropped


def recover(
    client: Client,
    database: str,
    *,
    after_statement: StatementHook | None = None,
    finish_drop_of: int | None = None,
) -> list[str]:
    """Finish or undo the operations of the swap journal that were interrupted (a crash, a kill), oldest first.

    * an interrupted **swap** is reverted: a ``revert`` operation puts back, table by table, what was live before
      it (so a partial swap never stays: the live tables are again the previous, consistent set; the replayed
      tables stay as ``<table>_vN`` or ``<table>_before_vN``);
    * an interrupted **rollback** or **revert** is completed;
    * an interrupted **drop-old** of version ``finish_drop_of`` is completed; of another version it raises
      :class:`ReplayError` (finish it with ``coach replay drop-old --version N``: nothing is dropped implicitly).

    Every entry point of the swap (:func:`swap_in`, :func:`rollback`, :func:`drop_old_tables`,
    :func:`prepare_replay_tables`) calls it first. Returns one line per operation handled (empty: nothing was
    interrupted). Raises :class:`ReplayError` when the journal is missing or the tables no longer match it.
    """
    return _recover(client, database, after_statement, finish_drop_of)[0]


def _recover(
    client: Client, database: str, after_statement: StatementHook | None, finish_drop_of: int | None
) -> tuple[list[str], list[str]]:
    """:func:`recover`, also returning the names an interrupted drop-old dropped now."""
    journal = _Journal(client, database, after_statement)
    ops = swap_journal(client, database)
    reverted = {op.ref_op for op in ops if op.op == _REVERT and op.done}
    reverting = {op.ref_op for op in ops if op.op == _REVERT and not op.done}
    actions: list[str] = []
    dropped: list[str] = []
    for op in ops:
        if op.done or op.op == _BUILD or (op.op == _SWAP and op.op_id in reverted):
            continue
        if op.op == _SWAP:
            if op.op_id in reverting:
                continue  # its revert (later in the journal) finishes the job
            revert = journal.plan(op.version, _REVERT, dict(op.targets), dict(op.sources), ref_op=op.op_id)
            _drive(journal, op.version, revert)
            journal.done(revert)
            actions.append(f"reverted the interrupted swap of version {op.version}: the previous tables are live")
        elif op.op in (_ROLLBACK, _REVERT):
            _drive(journal, op.version, op)
            journal.done(op)
            actions.append(f"completed the interrupted {op.op} of version {op.version}")
        elif op.op == _DROP_OLD:
            if finish_drop_of != op.version:
                raise ReplayError(
                    f"the drop-old of version {op.version} was interrupted: "
                    f"run `coach replay drop-old --version {op.version}` again first"
                )
            now = _drop(journal, op.version, op)
            journal.done(op)
            dropped += now
            actions.append(f"completed the interrupted drop-old of version {op.version}: dropped {now or 'none'}")
    return actions, dropped


def swap_in(client: Client, database: str, version: int, *, after_statement: StatementHook | None = None) -> list[str]:
    """Swap the ``<table>_v<version>`` tables in, keeping the live ones as ``<table>_before_v<version>``.

    Journaled and resumable (module docstring): first :func:`recover`; then the plan (the live and the new tables'
    UUIDs) is written, and per table ``RENAME <table>_vN TO <table>_before_vN`` and ``EXCHANGE TABLES <table> AND
    <table>_before_vN``. Interrupted anywhere, every live table exists and every previously live table is either
    live or ``<table>_before_vN``; the next swap, rollback, drop-old or replay reverts the partial swap. Returns
    how each table was swapped (``"exchange"``). Raises :class:`ReplayError` when a table is missing, version
    ``version`` was already swapped in, or the database has no table UUIDs (not Atomic).
    """
    recover(client, database, after_statement=after_statement)
    uuids = _uuids(client, database, version)
    for live in METRIC_TABLES:
        if live not in uuids:
            raise ReplayError(f"{database}.{live} does not exist: run `coach migrate` first")
        if before_version(live, version) in uuids:
            raise ReplayError(
                f"version {version} was already swapped in ({database}.{before_version(live, version)} exists)"
            )
        if versioned(live, version) not in uuids:
            raise ReplayError(f"{database}.{versioned(live, version)} does not exist: nothing to swap in")
    _make_live(_Journal(client, database, after_statement), version, _SWAP, uuids, versioned)
    return ["exchange" for _ in METRIC_TABLES]


def rollback(client: Client, database: str, version: int, *, after_statement: StatementHook | None = None) -> str:
    """Put back the tables that were live before version ``version`` was swapped in; returns what it did.

    When an operation of version ``version`` was interrupted, finishing it is the rollback (:func:`recover`: an
    interrupted swap is reverted, an interrupted rollback completed); after a reverted swap there is nothing more
    to do. Otherwise every live table is exchanged
    with its ``<table>_before_v<version>`` (journaled like a swap), so the replaced tables are kept there and
    running it again undoes the rollback. Raises :class:`ReplayError` when those tables are gone (dropped, or
    never swapped) or a drop-old was interrupted.
    """
    pending = [op for op in swap_journal(client, database) if op.version == version and not op.done]
    actions = recover(client, database, after_statement=after_statement)
    if pending and actions:
        return "; ".join(actions)
    swaps = [op for op in swap_journal(client, database) if op.version == version and op.op == _SWAP]
    if swaps and not swaps[-1].done:  # recovered (now or by an earlier, interrupted call): nothing was swapped
        return f"the interrupted swap of version {version} was reverted: the tables live before it are live"
    uuids = _uuids(client, database, version)
    for live in METRIC_TABLES:
        if before_version(live, version) not in uuids:
            raise ReplayError(f"{database}.{before_version(live, version)} does not exist (dropped, or never swapped)")
        if live not in uuids:
            raise ReplayError(f"{database}.{live} does not exist: run `coach migrate` first")
    _make_live(_Journal(client, database, after_statement), version, _ROLLBACK, uuids, before_version)
    return "; ".join([*actions, f"exchanged the live tables with <table>_before_v{version}"])


def drop_old_tables(
    client: Client, database: str, version: int, *, after_statement: StatementHook | None = None
) -> list[str]:
    """Drop the ``<table>_before_v<version>`` tables kept by a swap (or, after a rollback, the replayed ones).

    Journaled: an interrupted drop-old is completed by the next call with the same version. Never drops a live
    table; after an interrupted swap it first reverts it (:func:`recover`). Returns the names dropped.
    """
    _, dropped = _recover(client, database, after_statement, version)
    uuids = _uuids(client, database, version)
    doomed = {t: uuids[before_version(t, version)] for t in METRIC_TABLES if before_version(t, version) in uuids}
    if not doomed:
        return dropped
    journal = _Journal(client, database, after_statement)
    op = journal.plan(version, _DROP_OLD, doomed, {live: uuids[live] for live in doomed if live in uuids})
    dropped += _drop(journal, version, op)
    journal.done(op)
    return dropped


def prepare_replay_tables(
    client: Client, database: str, version: int, *, after_statement: StatementHook | None = None
) -> list[str]:
    """Create the empty ``<table>_v<version>`` targets of a replay (``CREATE TABLE … AS <table>``), journaled.

    First :func:`recover` (a partial swap is reverted). Then the leftovers of an unfinished replay of version
    ``version`` are dropped: its ``<table>_vN`` tables and, after a reverted swap of it, its replayed tables kept
    as ``<table>_before_vN``. Only tables known to be such leftovers are dropped: created by a replay of this
    version (their UUIDs are in the journal), or empty; never one whose UUID is live or was live before a swap.
    Anything else (e.g. the previous live table under ``<table>_vN``, left by a swap interrupted before this
    journal existed) raises :class:`ReplayError` and is left alone. Returns what it recovered and dropped, one
    line each. Raises :class:`ReplayError` also when a live table is missing (run ``coach migrate``), version
    ``version`` was already swapped in (its ``<table>_before_vN`` exist), or a drop-old was interrupted.
    """
    actions = recover(client, database, after_statement=after_statement)
    ops = swap_journal(client, database)
    swapped = any(op.done for op in ops if op.version == version and op.op == _SWAP)
    built = {u for op in ops if op.version == version and op.op in (_BUILD, _SWAP) for u in op.targets.values()}
    uuids = _uuids(client, database, version)
    protected = {uuids[t] for t in METRIC_TABLES if t in uuids}
    protected |= {u for op in ops if op.op == _SWAP for u in op.sources.values()}

    def droppable(name: str) -> bool:
        if uuids[name] in protected:
            return False
        if uuids[name] in built:
            return True
        return not client.query(f"SELECT count() FROM {database}.{name}").result_rows[0][0]

    leftovers = []
    for live in METRIC_TABLES:
        new, before = versioned(live, version), before_version(live, version)
        if live not in uuids:
            raise ReplayError(f"{database}.{live} does not exist: run `coach migrate` first")
        if before in uuids:
            if swapped or uuids[before] not in built or not droppable(before):
                raise ReplayError(
                    f"version {version} was already swapped in ({database}.{before} exists): replay with a higher "
                    "--version, or drop the old tables first (coach replay drop-old)"
                )
            leftovers.append(before)
        if new in uuids:
            if not droppable(new):
                raise ReplayError(
                    f"{database}.{new} is not an unfinished replay's table (not in the swap journal, not empty, or "
                    "live before a swap): not dropping it; rename it (it may hold the previous live table) or use "
                    "another --version"
                )
            leftovers.append(new)
    _require_uuids(uuids, database)
    journal = _Journal(client, database, after_statement)
    for name in leftovers:
        journal.command(f"DROP TABLE {database}.{name} SYNC")
        actions.append(f"dropped {name}, left by an unfinished replay of version {version}")
    for live in METRIC_TABLES:
        journal.command(f"CREATE TABLE {database}.{versioned(live, version)} AS {database}.{live}")
    uuids = _uuids(client, database, version)
    journal.plan(  # a record of the tables built (done as written), so that a rerun knows it may drop them
        version,
        _BUILD,
        {live: uuids[live] for live in METRIC_TABLES},
        {live: uuids[versioned(live, version)] for live in METRIC_TABLES},
    )
    return actions


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
            f"cannot open ClickHouse at {redact_dsn(platform.clickhouse_dsn)}: {redact_dsn(str(exc))} (with "
            "embedded chDB, stop `coach run` "
            "first: one process at a time may open its data directory)"
        ) from exc
    target = TableNames.for_version(database, version)
    recovered = prepare_replay_tables(client, database, version)

    ensure_cdc_topic(platform, settings.learners_topic)
    bootstrap = platform.bootstrap_servers
    topics = (settings.transcripts_topic, settings.learners_topic)
    stop_at = {topic: end_offsets(bootstrap, topic) for topic in topics}
    lows = {topic: _low_offsets(bootstrap, topic, list(ends)) for topic, ends in stop_at.items()}
    total = sum(max(end - lows[topic][p], 0) for topic, ends in stop_at.items() for p, end in ends.items())
    report = ReplayReport(version, METRICS_VERSION, target, stop_at, recovered=recovered)

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
