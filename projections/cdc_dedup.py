"""Consumer-side deduplication of Debezium change events (``cdc.public.<table>``), keyed by
``(source.lsn, table, primary key)``.

Debezium delivers at least once: when Kafka Connect stops without flushing its source offsets (a crash, a kill),
the task restarts from the last flushed LSN and produces the changes after it again, byte for byte except for
``ts_ms``. The WAL position ``source.lsn`` of a change identifies it; with the table and the row's primary key (the
message key) it identifies one row change. Changes of one row are totally ordered by their LSN (a second writer of a
row waits for the first one's commit, so its change lies later in the WAL), hence a consumer only needs, per
``(table, primary key)``, the highest LSN it has applied: an event at or below it is a replay.

Snapshot reads (``op: "r"``) all carry the LSN of the snapshot's start, which precedes every streamed change.
Truncate (``op: "t"``) and messages without an LSN are never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CdcDeduplicator", "ChangeEvent", "ChangeSource", "change_key", "dedup_changes"]


class ChangeSource(BaseModel):
    """Debezium PostgreSQL ``source`` block (the fields used here; others are kept)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    connector: str = Field(default="postgresql")
    db: str
    schema_name: str = Field(alias="schema", description="PostgreSQL schema, e.g. 'public'")
    table: str
    lsn: int | None = Field(default=None, description="WAL position (log sequence number) of the change")
    txId: int | None = Field(default=None, description="PostgreSQL transaction id")  # noqa: N815 - Debezium's name
    ts_ms: int = Field(description="Commit time in the database, ms since the epoch")
    snapshot: str | bool | None = Field(default=None, description="'true'/'last'/'first' during the snapshot")


class ChangeEvent(BaseModel):
    """A Debezium change event as written with the JSON converter without schemas (``cdc.public.<table>``).

    ``before``/``after``: the row (column → value; ``timestamptz`` as ISO-8601 strings, ``jsonb`` as JSON strings).
    ``before`` is the full old row for ``learners`` (REPLICA IDENTITY FULL), only the key for the other tables, and
    ``None`` on inserts and snapshot reads. ``op``: c(reate), u(pdate), d(elete), r(ead, snapshot), t(runcate),
    m(essage).
    """

    model_config = ConfigDict(extra="allow")

    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    source: ChangeSource
    op: Literal["c", "u", "d", "r", "t", "m"]
    ts_ms: int | None = Field(default=None, description="When Debezium processed the change, ms since the epoch")


def _loads(data: bytes | str | dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None or isinstance(data, dict):
        return data
    loaded = json.loads(data)
    return loaded if isinstance(loaded, dict) else None


def change_key(
    key: bytes | str | dict[str, Any] | None, value: bytes | str | dict[str, Any]
) -> tuple[int | None, str, str]:
    """``(source.lsn, "schema.table", primary key as canonical JSON)`` of one change event.

    ``key`` is the Kafka message key (Debezium writes the primary key columns, e.g. ``{"user_id": "u1"}``); when it
    is missing (a table without primary key), the row image (``after``, else ``before``) stands in for it.
    Raises ``ValueError`` when ``value`` is not a change event.
    """
    event = _loads(value)
    if event is None or not isinstance(event.get("source"), dict):
        raise ValueError("not a Debezium change event (no 'source')")
    source = event["source"]
    table = f"{source.get('schema', '')}.{source.get('table', '')}"
    pk = _loads(key)
    if pk is None:
        pk = event.get("after") or event.get("before") or {}
    lsn = source.get("lsn")
    return (int(lsn) if lsn is not None else None, table, json.dumps(pk, sort_keys=True, separators=(",", ":")))


class CdcDeduplicator:
    """Remembers, per ``(table, primary key)``, the highest LSN accepted; :meth:`accept` says whether an event is new.

    Memory: one entry per distinct row seen. Not thread-safe. For a consumer that must survive restarts, persist
    :attr:`watermarks` with its output (or apply changes with an idempotent ``WHERE stored_lsn < new_lsn``).
    """

    def __init__(self) -> None:
        self.watermarks: dict[tuple[str, str], int] = {}
        self.dropped = 0

    def accept(self, key: bytes | str | dict[str, Any] | None, value: bytes | str | dict[str, Any] | None) -> bool:
        """True when the change is new (and remember it); False for a replay. Tombstones (``value`` None), truncates
        and changes without an LSN are accepted."""
        event = _loads(value)
        if event is None or event.get("op") in ("t", "m"):
            return True
        lsn, table, pk = change_key(key, event)
        if lsn is None:
            return True
        row = (table, pk)
        last = self.watermarks.get(row)
        if last is not None and lsn <= last:
            self.dropped += 1
            return False
        self.watermarks[row] = lsn
        return True


def dedup_changes(
    messages: Iterable[tuple[bytes | str | dict[str, Any] | None, bytes | str | dict[str, Any] | None]],
) -> Iterator[tuple[Any, Any]]:
    """The ``(key, value)`` pairs of ``messages`` (in consumption order) without replayed changes."""
    dedup = CdcDeduplicator()
    for key, value in messages:
        if dedup.accept(key, value):
            yield key, value
