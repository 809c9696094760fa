"""The replay's table swap survives a crash between any two statements (embedded chDB, real DDL).

Each case migrates a ClickHouse database of its own (the session's chDB directory is shared, see
tests/conftest.py), fills the live metric tables with "old" rows and the replay's ``<table>_v1`` targets with
"new" rows, and runs a swap, rollback or drop-old whose hook raises after statement k, for every k. After each
crash: every live table exists, every old row is in exactly one of live / ``<table>_before_v1`` (and no new row
is lost); then a rerun of the replay (``prepare_replay_tables`` + ``swap_in``) and ``rollback`` each bring back a
consistent set: the three live tables all old, or all new.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

import pytest
from clickhouse_connect.driver.client import Client

from clickhouse import SQL_DIR
from flows.replay import (
    ReplayError,
    StatementHook,
    drop_old_tables,
    prepare_replay_tables,
    recover,
    rollback,
    swap_in,
    swap_journal,
)
from flows.tables import METRIC_TABLES, before_version, versioned
from runtime.clickhouse import get_clickhouse_client
from runtime.settings import PlatformSettings
from runtime.sql_migrations import apply_clickhouse

pytestmark = pytest.mark.integration

VERSION = 1
OLD_ROWS = 3  # per live table, user ids old-<table>-<i>
NEW_ROWS = 2  # per replayed table, user ids new-<table>-<i>


class Crash(Exception):
    """The simulated crash, raised by the hook after a statement."""


def crash_after(k: int) -> StatementHook:
    """A hook that lets ``k - 1`` statements pass and raises :class:`Crash` right after the ``k``-th."""
    seen = [0]

    def hook(statement: str) -> None:
        seen[0] += 1
        if seen[0] == k:
            raise Crash(f"after statement {k}: {statement}")

    return hook


class Operation(Protocol):
    """A journaled table operation of the replay: :func:`swap_in`, :func:`rollback` or :func:`drop_old_tables`."""

    def __call__(
        self, client: Client, database: str, version: int, *, after_statement: StatementHook | None = None
    ) -> object: ...


Setup = Callable[[Callable[[], tuple[Client, str]]], tuple[Client, str]]
"""Where an operation starts (:func:`staged` or :func:`swapped`): a database made by the ``new_database`` factory."""


def count_statements(operation: Operation, setup: Setup, new_database: Callable[[], tuple[Client, str]]) -> int:
    """How many statements ``operation`` of :data:`VERSION` executes, without a crash, on a fresh
    ``setup(new_database)`` database."""
    seen: list[str] = []
    operation(*setup(new_database), VERSION, after_statement=seen.append)
    return len(seen)


def crashed(
    operation: Operation, setup: Setup, new_database: Callable[[], tuple[Client, str]], k: int
) -> tuple[Client, str]:
    """A fresh ``setup(new_database)`` database on which ``operation`` of :data:`VERSION` crashed (:class:`Crash`)
    right after its ``k``-th statement."""
    client, database = setup(new_database)
    with pytest.raises(Crash):
        operation(client, database, VERSION, after_statement=crash_after(k))
    return client, database


def crash_points(
    operation: Operation, setup: Setup, new_database: Callable[[], tuple[Client, str]]
) -> Iterator[tuple[int, int, Client, str]]:
    """``(k, statements, client, database)`` for every statement ``k`` (1-based) of the ``statements`` that
    ``operation`` of :data:`VERSION` executes: a fresh database on which it crashed right after the ``k``-th
    (:func:`crashed`; at ``k == statements`` the operation had finished)."""
    statements = count_statements(operation, setup, new_database)
    for k in range(1, statements + 1):
        yield (k, statements, *crashed(operation, setup, new_database, k))


@pytest.fixture
def new_database() -> Iterator[Callable[[], tuple[Client, str]]]:
    """Factory of migrated databases (dropped at the end of the test)."""
    made: list[tuple[Client, str]] = []

    def make() -> tuple[Client, str]:
        database = f"test_swap_{uuid.uuid4().hex[:10]}"
        client = get_clickhouse_client(PlatformSettings(clickhouse_database=database), database=database)
        apply_clickhouse(client, SQL_DIR, database)
        made.append((client, database))
        return client, database

    yield make
    for client, database in made:
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def fill(client: Client, database: str, table: str, tag: str, rows: int) -> None:
    """Insert ``rows`` rows whose user ids are ``<tag>-<live table>-<i>`` (other columns: their defaults)."""
    live = next(t for t in METRIC_TABLES if table == t or table.startswith(f"{t}_"))
    client.command(
        f"INSERT INTO {database}.{table} (user_id) "
        f"SELECT concat('{tag}-{live}-', toString(number)) FROM numbers({rows})"
    )


def staged(new_database: Callable[[], tuple[Client, str]]) -> tuple[Client, str]:
    """A database whose live tables hold the old rows and whose ``_v1`` targets (built as a replay builds them)
    hold the new rows: ready to swap."""
    client, database = new_database()
    for table in METRIC_TABLES:
        fill(client, database, table, "old", OLD_ROWS)
    assert prepare_replay_tables(client, database, VERSION) == []
    for table in METRIC_TABLES:
        fill(client, database, versioned(table, VERSION), "new", NEW_ROWS)
    return client, database


def swapped(new_database: Callable[[], tuple[Client, str]]) -> tuple[Client, str]:
    """A fresh database, staged (:func:`staged`) and swapped in: where a rollback or a drop of the old tables
    starts."""
    client, database = staged(new_database)
    swap_in(client, database, VERSION)
    return client, database


def tables(client: Client, database: str) -> dict[str, dict[str, int]]:
    """``{table name: {tag: rows}}`` of every table of ``database`` (tag: old, new)."""
    names = [r[0] for r in client.query(f"SHOW TABLES FROM {database}").result_rows]
    out: dict[str, dict[str, int]] = {}
    for name in names:
        if any(name == t or name.startswith(f"{t}_") for t in METRIC_TABLES):
            rows = client.query(
                f"SELECT splitByChar('-', user_id)[1], count() FROM {database}.{name} GROUP BY 1"
            ).result_rows
            out[name] = {str(tag): int(n) for tag, n in rows}
    return out


def live_sides(client: Client, database: str, *, new_kept: bool = True) -> set[str]:
    """Check the crash invariant and return which data the live tables hold ({"old"}, {"new"} or both: partial).

    Every live table exists and holds only old or only new rows; every old row is in exactly one of the live
    table and ``<table>_before_v1``; with ``new_kept``, every new row is in exactly one of live, ``_v1`` and
    ``_before_v1``.
    """
    found = tables(client, database)
    sides = set()
    for live in METRIC_TABLES:
        assert live in found, f"{live} is missing: {found}"
        assert len(found[live]) == 1, found
        sides |= set(found[live])
        before, new = before_version(live, VERSION), versioned(live, VERSION)
        old_places = [n for n in (live, before, new) if found.get(n, {}).get("old")]
        assert old_places in ([live], [before]), found
        assert found[old_places[0]] == {"old": OLD_ROWS}, found
        if new_kept:
            new_places = [n for n in (live, before, new) if found.get(n, {}).get("new")]
            assert len(new_places) == 1 and found[new_places[0]] == {"new": NEW_ROWS}, found
    return sides


def test_clean_swap_rollback_and_drop_old(new_database: Callable[[], tuple[Client, str]]) -> None:
    client, database = staged(new_database)
    assert swap_in(client, database, VERSION) == ["exchange"] * 3
    assert live_sides(client, database) == {"new"}
    assert {before_version(t, VERSION) for t in METRIC_TABLES} <= set(tables(client, database))
    with pytest.raises(ReplayError, match="already swapped"):
        prepare_replay_tables(client, database, VERSION)
    rollback(client, database, VERSION)
    assert live_sides(client, database) == {"old"}
    rollback(client, database, VERSION)  # undoes the rollback
    assert live_sides(client, database) == {"new"}
    assert sorted(drop_old_tables(client, database, VERSION)) == sorted(before_version(t, 1) for t in METRIC_TABLES)
    assert set(tables(client, database)) == set(METRIC_TABLES)
    assert all(op.done for op in swap_journal(client, database))
    assert recover(client, database) == []


def test_swap_crashing_after_any_statement_is_reverted_by_rollback_and_by_a_rerun(
    new_database: Callable[[], tuple[Client, str]],
) -> None:
    statements = count_statements(swap_in, staged, new_database)
    assert statements >= 2 * len(METRIC_TABLES) + 2  # plan, per table rename + exchange (+ journal rows), end
    partial = 0
    for k in range(1, statements + 1):
        # rollback after the crash: the previous tables are live again, the replayed ones kept
        client, database = crashed(swap_in, staged, new_database, k)
        sides = live_sides(client, database)
        partial += len(sides) == 2
        rollback(client, database, VERSION)  # reverts the partial swap (after the end row: rolls the swap back)
        assert live_sides(client, database) == {"old"}, k
        assert (
            all(op.done for op in swap_journal(client, database) if op.op != "swap") and recover(client, database) == []
        )

        # a rerun of the replay after the crash: reverts, drops only the replayed leftovers, rebuilds, swaps in
        client, database = crashed(swap_in, staged, new_database, k)
        if k == statements:  # it had finished: the rerun refuses, like any rerun of a swapped version
            with pytest.raises(ReplayError, match="already swapped"):
                prepare_replay_tables(client, database, VERSION)
            continue
        prepare_replay_tables(client, database, VERSION)
        assert live_sides(client, database, new_kept=False) == {"old"}
        assert tables(client, database) == {
            **{t: {"old": OLD_ROWS} for t in METRIC_TABLES},
            **{versioned(t, VERSION): {} for t in METRIC_TABLES},
        }
        for table in METRIC_TABLES:
            fill(client, database, versioned(table, VERSION), "new", NEW_ROWS)
        swap_in(client, database, VERSION)
        assert live_sides(client, database) == {"new"}
        rollback(client, database, VERSION)
        assert live_sides(client, database) == {"old"}
    assert partial > 0  # some crash points really left the live set half swapped


@pytest.mark.parametrize(("retry", "crash_at"), [("rollback", 1), ("rollback", 2), ("rerun", 0)])
def test_recovery_crashing_again_still_converges(
    new_database: Callable[[], tuple[Client, str]], retry: str, crash_at: int
) -> None:
    """A crash during the recovery of a crash: retries get further, the invariant holds throughout.

    ``crash_at`` 0: the n-th retry crashes after its n-th statement (a rerun drops the empty targets the previous
    attempt created before it creates them again, so a crash at the same point every time would never finish).
    """
    statements = count_statements(swap_in, staged, new_database)
    for k in range(1, statements):
        client, database = crashed(swap_in, staged, new_database, k)
        for attempt in range(1, 4 * statements):
            hook = crash_after(crash_at or attempt)
            try:
                if retry == "rollback":
                    rollback(client, database, VERSION, after_statement=hook)
                else:
                    prepare_replay_tables(client, database, VERSION, after_statement=hook)
                break
            except Crash:
                live_sides(client, database, new_kept=retry == "rollback")
        else:
            pytest.fail(f"the {retry} after a crash at statement {k} never finished")
        assert live_sides(client, database, new_kept=retry == "rollback") == {"old"}, k
        if retry == "rerun":
            assert all(tables(client, database)[versioned(t, VERSION)] == {} for t in METRIC_TABLES)
            assert all(op.done for op in swap_journal(client, database) if op.op != "swap")


def test_rollback_crashing_after_any_statement_is_completed_by_the_next_rollback(
    new_database: Callable[[], tuple[Client, str]],
) -> None:
    for k, statements, client, database in crash_points(rollback, swapped, new_database):
        live_sides(client, database)
        rollback(client, database, VERSION)  # completes the interrupted rollback (or, if it had finished, undoes it)
        assert live_sides(client, database) == ({"new"} if k == statements else {"old"}), k
        rollback(client, database, VERSION)
        assert live_sides(client, database) == ({"old"} if k == statements else {"new"}), k


def test_drop_old_crashing_after_any_statement_is_completed_by_the_next_drop_old(
    new_database: Callable[[], tuple[Client, str]],
) -> None:
    for k, statements, client, database in crash_points(drop_old_tables, swapped, new_database):
        found = tables(client, database)
        assert all(found[t] == {"new": NEW_ROWS} for t in METRIC_TABLES), found  # the live set is untouched
        kept = [before_version(t, VERSION) for t in METRIC_TABLES if before_version(t, VERSION) in found]
        assert all(found[name] == {"old": OLD_ROWS} for name in kept), found
        if k < statements:
            with pytest.raises(ReplayError, match="drop-old of version 1 was interrupted"):
                rollback(client, database, VERSION)  # a half-dropped rollback copy is never swapped back
        dropped = drop_old_tables(client, database, VERSION)
        assert sorted(dropped) == sorted(kept) if k < statements else dropped == [], k
        assert set(tables(client, database)) == set(METRIC_TABLES), k
        assert all(op.done for op in swap_journal(client, database))


def test_prepare_never_drops_a_table_that_was_live(new_database: Callable[[], tuple[Client, str]]) -> None:
    # a swap interrupted by the code before the journal (EXCHANGE done, RENAME not): <table>_v1 holds the old
    # live table and nothing in the journal says so; it is not empty, so the rerun refuses to drop it
    client, database = new_database()
    for table in METRIC_TABLES:
        fill(client, database, table, "old", OLD_ROWS)
        client.command(f"CREATE TABLE {database}.{versioned(table, VERSION)} AS {database}.{table}")
        fill(client, database, versioned(table, VERSION), "new", NEW_ROWS)
    client.command(
        f"EXCHANGE TABLES {database}.{METRIC_TABLES[0]} AND {database}.{versioned(METRIC_TABLES[0], VERSION)}"
    )
    with pytest.raises(ReplayError, match="not dropping it"):
        prepare_replay_tables(client, database, VERSION)
    assert tables(client, database)[versioned(METRIC_TABLES[0], VERSION)] == {"old": OLD_ROWS}

    # the previous live table moved under a later version's target name: protected by the journal
    client, database = staged(new_database)
    swap_in(client, database, VERSION)
    live = METRIC_TABLES[1]
    client.command(f"RENAME TABLE {database}.{before_version(live, VERSION)} TO {database}.{versioned(live, 2)}")
    with pytest.raises(ReplayError, match="not dropping it"):
        prepare_replay_tables(client, database, 2)
    assert tables(client, database)[versioned(live, 2)] == {"old": OLD_ROWS}

    # an empty leftover nobody journaled (a crash between CREATE and the journal row) is dropped
    client, database = new_database()
    client.command(f"CREATE TABLE {database}.{versioned(live, VERSION)} AS {database}.{live}")
    assert prepare_replay_tables(client, database, VERSION) == [
        f"dropped {versioned(live, VERSION)}, left by an unfinished replay of version {VERSION}"
    ]


def test_cli_recover_and_rollback_after_a_crashed_swap(new_database: Callable[[], tuple[Client, str]]) -> None:
    from typer.testing import CliRunner

    from flows.cli import replay_app

    runner = CliRunner()
    client, database = crashed(swap_in, staged, new_database, 6)  # mid-swap: a mixed live set
    assert live_sides(client, database) == {"old", "new"}
    recovered = runner.invoke(replay_app, ["recover", "--database", database])
    assert recovered.exit_code == 0, recovered.output
    assert "reverted the interrupted swap of version 1" in recovered.output
    assert live_sides(client, database) == {"old"}
    again = runner.invoke(replay_app, ["recover", "--database", database])
    assert again.exit_code == 0 and "nothing was interrupted" in again.output

    client, database = crashed(swap_in, staged, new_database, 6)
    rolled = runner.invoke(replay_app, ["rollback", "--version", "1", "--database", database])
    assert rolled.exit_code == 0 and "reverted the interrupted swap" in rolled.output, rolled.output
    assert live_sides(client, database) == {"old"}
    refused = runner.invoke(replay_app, ["rollback", "--version", "1", "--database", database])
    assert refused.exit_code == 0 and "was reverted" in refused.output, refused.output  # nothing more to undo
