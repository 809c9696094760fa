"""Versioned SQL migrations: ordered ``NNNN_name.sql`` files applied once, tracked with checksums.

Used for PostgreSQL (``projections/sql/``) and ClickHouse (``clickhouse/sql/``). A migration that was
applied and then edited is refused (its checksum no longer matches): add a new file instead.
Statements inside a file are separated by a line holding only ``;`` or by ``;`` at end of line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Migration", "MigrationError", "discover", "apply_postgres", "apply_clickhouse"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed, or an applied one was changed."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``version`` (from the 4-digit prefix), ``name``, its statements and checksum."""

    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


def discover(directory: Path, substitutions: dict[str, str] | None = None) -> list[Migration]:
    """Read ``directory/NNNN_name.sql`` files in version order.

    ``substitutions`` replace ``{{key}}`` placeholders (e.g. the ClickHouse database). Raises
    :class:`MigrationError` on a badly named file or a duplicate version.
    """
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_snake_name.sql")
        text = path.read_text(encoding="utf-8")
        for key, value in (substitutions or {}).items():
            text = text.replace("{{" + key + "}}", value)
        statements = tuple(s.strip() for s in re.split(r";\s*(?:\n|$)", text) if _has_sql(s))
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: duplicate migration version {version}")
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        found[version] = Migration(version, match.group(2), statements, checksum)
    return [found[v] for v in sorted(found)]


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def apply_postgres(conn: Any, directory: Path) -> list[str]:
    """Apply pending migrations to a psycopg connection, each file in its own transaction.

    Returns the names applied. Raises :class:`MigrationError` if an applied file was changed.
    """
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    applied = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()}
    done = []
    for m in discover(directory):
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(f"PostgreSQL migration {m.version:04d}_{m.name} changed after it was applied")
            continue
        with conn.transaction():
            for statement in m.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
        done.append(f"{m.version:04d}_{m.name}")
    return done


def apply_clickhouse(client: Any, directory: Path, database: str) -> list[str]:
    """Apply pending migrations to a clickhouse-connect client (chDB or server).

    ClickHouse DDL is not transactional: each statement must be idempotent (``IF NOT EXISTS``) so a
    file interrupted halfway can be re-run. Returns the names applied.
    """
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations (version UInt32, name String,"
        " checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))"
        " ENGINE = ReplacingMergeTree ORDER BY version"
    )
    rows = client.query(f"SELECT version, checksum FROM {database}.schema_migrations FINAL").result_rows
    applied = {int(v): c for v, c in rows}
    done = []
    for m in discover(directory, {"db": database}):
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(f"ClickHouse migration {m.version:04d}_{m.name} changed after it was applied")
            continue
        for statement in m.statements:
            client.command(statement)
        client.insert(
            f"{database}.schema_migrations",
            [[m.version, m.name, m.checksum]],
            column_names=["version", "name", "checksum"],
        )
        done.append(f"{m.version:04d}_{m.name}")
    return done
