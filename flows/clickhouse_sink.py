"""A batching, idempotent Bytewax sink into one ClickHouse table (embedded chDB or a server).

Each sink partition buffers rows and inserts them with one ``INSERT`` when ``batch_rows`` are buffered and at
every epoch boundary (``snapshot``, called before Bytewax commits the epoch's recovery snapshot) and at the end.
So every row of an epoch is in ClickHouse before the epoch counts as done: a crash replays at most the
uncommitted epoch, whose rows are written again. With ``write_through`` (the live metric flow,
``COACH_FLOWS_SINK_WRITE_THROUGH``) it also inserts at the end of every ``write_batch`` (the rows Bytewax hands
it at once: those of one source batch, at most ``batch_rows`` per insert), so a result waits for neither the
epoch nor a full buffer; the recovery snapshots keep their interval. A crash then leaves rows of the uncommitted
epoch in ClickHouse that the resumed flow writes again, possibly grouped into other batches (other tokens): the
re-written rows have the same natural keys and collapse as below, so readers that read with ``FINAL`` or
``argMax`` (the API, the dashboards) see each row once.

Writing a row twice is harmless: the tables are ``ReplacingMergeTree`` on the rows' natural keys. On top, each
insert carries ``insert_deduplication_token`` = ``<table>:<sha256 of the rows' positions>`` (Kafka
topic/partition/offset of the messages behind each row, see :data:`SinkRow`), and the tables set
``non_replicated_deduplication_window``: a retried insert, or the same batch re-emitted after a restart, is
dropped by ClickHouse instead of creating parts to merge away. Inserts are retried with the same token
(exponential backoff); when the retries are exhausted the error fails the dataflow, which restarts from its
last snapshot.

A batch is handed to clickhouse-connect column-oriented, with ``DateTime64`` columns as their integer ticks
(:func:`datetime64_ticks`, the value clickhouse-connect would compute and write for a ``datetime``): its
per-value conversion of datetimes is a large share of the Python time of an insert of window rows (measured in
``bench/RESULTS.md``, Flows, session 4), and the values repeat within a batch (the batch's ``computed_at``, the
windows' bounds), so each distinct one is converted once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver.client import Client
from tenacity import Retrying, stop_after_attempt, wait_exponential

__all__ = ["ClickHouseSink", "SinkRow", "check_columns", "datetime64_ticks", "dedup_token"]

log = logging.getLogger(__name__)

SinkRow = tuple[tuple[Any, ...], str]
"""``(row, position)``: a row in the table's column order and the deterministic position of what produced it
(``"speech.transcripts.v1:3:1207"``; for a window row its key, window id and latest source position)."""


def dedup_token(table: str, positions: Sequence[str]) -> str:
    """The ``insert_deduplication_token`` of a batch: the table and a SHA-256 of the rows' positions."""
    digest = hashlib.sha256("\n".join(positions).encode("utf-8")).hexdigest()
    return f"{table}:{len(positions)}:{digest[:40]}"


_DATETIME64 = re.compile(r"(?:Nullable\()?DateTime64\((\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def datetime64_ticks(value: datetime, precision: int) -> int:
    """The ``DateTime64(precision)`` value of a tz-aware ``datetime``: ticks of ``10**-precision`` s since the Unix
    epoch, rounded down (as clickhouse-connect writes a ``datetime``). Raises ``TypeError`` on a naive datetime."""
    micros = (value - _EPOCH) // _MICROSECOND
    return micros // 10 ** (6 - precision) if precision <= 6 else micros * 10 ** (precision - 6)


def _ticks_column(values: Sequence[Any], precision: int) -> list[Any]:
    """``values`` with each ``datetime`` replaced by :func:`datetime64_ticks` (``None`` stays ``None``), each
    distinct value converted once."""
    converted: dict[datetime, int] = {}
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        ticks = converted.get(value)
        if ticks is None:
            ticks = converted[value] = datetime64_ticks(value, precision)
        out.append(ticks)
    return out


def check_columns(client: Client, table: str, columns: Sequence[str]) -> list[str]:
    """The ClickHouse types of ``columns`` of ``table`` (``database.table``). Raises ``RuntimeError`` naming the
    missing ones (run ``coach migrate``), and clickhouse-connect's errors when the table or engine is unreachable."""
    described = client.query(f"DESCRIBE TABLE {table}").result_rows
    types = {row[0]: row[1] for row in described}
    missing = [column for column in columns if column not in types]
    if missing:
        raise RuntimeError(f"{table} lacks columns {missing}: run `coach migrate`")
    return [types[column] for column in columns]


class _ClickHousePartition(StatefulSinkPartition[SinkRow, None]):
    def __init__(self, sink: ClickHouseSink) -> None:
        self._sink = sink
        self._client = sink.client_factory()
        self._types = check_columns(self._client, sink.table, sink.columns)
        self._ticks = [
            (index, int(match.group(1)))
            for index, type_name in enumerate(self._types)
            if (match := _DATETIME64.match(type_name)) is not None
        ]
        self._rows: list[tuple[Any, ...]] = []
        self._positions: list[str] = []

    def write_batch(self, values: list[SinkRow]) -> None:
        for row, position in values:
            self._rows.append(row)
            self._positions.append(position)
            if len(self._rows) >= self._sink.batch_rows:
                self._flush()
        if self._sink.write_through:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        rows, positions = self._rows, self._positions
        token = dedup_token(self._sink.table, positions)
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
        for index, precision in self._ticks:
            columns[index] = _ticks_column(columns[index], precision)
        for attempt in Retrying(
            stop=stop_after_attempt(self._sink.retries),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.warning(
                        "retrying insert into %s (attempt %d)", self._sink.table, attempt.retry_state.attempt_number
                    )
                self._client.insert(
                    self._sink.table,
                    columns,
                    column_oriented=True,
                    column_names=list(self._sink.columns),
                    column_type_names=self._types,
                    settings={"insert_deduplication_token": token},
                )
        log.debug("inserted %d rows into %s", len(rows), self._sink.table)
        if self._sink.on_flush is not None:
            self._sink.on_flush(self._sink.table, len(rows))
        self._rows, self._positions = [], []

    def snapshot(self) -> None:
        self._flush()
        return None

    def close(self) -> None:
        self._flush()


class ClickHouseSink(FixedPartitionedSink[SinkRow, None]):
    """Insert :data:`SinkRow` values of a keyed stream into ``table`` (``database.table``) in batches.

    ``columns``: the column order of the rows; ``client_factory``: returns the clickhouse-connect client (for
    chDB, :func:`runtime.clickhouse.get_clickhouse_client` shares one per process); ``batch_rows``: insert once
    this many rows are buffered; ``retries``: attempts per insert; ``partitions``: sink partitions (rows are
    routed by key); ``on_flush``: called with ``(table, rows)`` after each insert (progress reporting);
    ``write_through``: also insert what each ``write_batch`` buffered before it returns, instead of waiting for
    ``batch_rows`` or the epoch boundary (only for tables on which a re-write collapses, see the module docstring).
    """

    def __init__(
        self,
        table: str,
        columns: Sequence[str],
        *,
        client_factory: Callable[[], Client],
        batch_rows: int = 5000,
        retries: int = 5,
        partitions: int = 1,
        on_flush: Callable[[str, int], None] | None = None,
        write_through: bool = False,
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.client_factory = client_factory
        self.batch_rows = batch_rows
        self.retries = retries
        self.partitions = partitions
        self.on_flush = on_flush
        self.write_through = write_through

    def list_parts(self) -> list[str]:
        """``<table>#<i>`` for each sink partition."""
        return [f"{self.table}#{index}" for index in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ClickHousePartition:
        """A buffering writer (no resume state: what it had written is in ClickHouse). Bytewax builds it when the
        first item arrives: :func:`check_columns` at start-up finds a missing table before that."""
        return _ClickHousePartition(self)
