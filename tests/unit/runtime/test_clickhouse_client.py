"""The ClickHouse client factory on embedded chDB, and its DSN validation."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from clickhouse import SQL_DIR
from runtime.clickhouse import get_clickhouse_client
from runtime.settings import PlatformSettings
from runtime.sql_migrations import MigrationError, apply_clickhouse

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def settings() -> PlatformSettings:
    """The session's chDB directory (one per process: see tests/conftest.py) and a database of this module."""
    return PlatformSettings(clickhouse_database=f"test_client_{uuid.uuid4().hex[:8]}")


def test_chdb_merge_tree_create_insert_query(settings: PlatformSettings) -> None:
    client = get_clickhouse_client(settings)
    assert settings.clickhouse_dsn.startswith("chdb://")
    client.command("CREATE TABLE IF NOT EXISTS probe (k UInt32, v String) ENGINE = MergeTree ORDER BY k")
    client.insert("probe", [[1, "a"], [2, "b"], [3, "c"]], column_names=["k", "v"])
    assert client.query("SELECT count(), sum(k) FROM probe").result_rows == [(3, 6)]
    engine = client.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'probe'",
        parameters={"db": settings.clickhouse_database},
    ).result_rows
    assert engine == [("MergeTree",)]
    data_dir = Path(settings.clickhouse_dsn.removeprefix("chdb://"))
    assert data_dir.is_dir() and any(data_dir.iterdir())


def test_same_path_shares_one_client_per_database(settings: PlatformSettings) -> None:
    assert get_clickhouse_client(settings) is get_clickhouse_client(settings)
    other = get_clickhouse_client(settings, database=f"{settings.clickhouse_database}_b")
    assert other is not get_clickhouse_client(settings)
    other.command("CREATE TABLE IF NOT EXISTS probe (k UInt8) ENGINE = MergeTree ORDER BY k")
    assert other.query("SELECT count() FROM probe").result_rows == [(0,)]  # its own database's table
    private = get_clickhouse_client(settings, new=True)
    assert private is not get_clickhouse_client(settings)
    assert private.query("SELECT 1").result_rows == [(1,)]


def test_unknown_scheme_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chdb://<dir> or http"):
        get_clickhouse_client(PlatformSettings(home=tmp_path, clickhouse_url="mysql://x"))


def test_migrations_apply_once_and_refuse_edits(settings: PlatformSettings, tmp_path: Path) -> None:
    client = get_clickhouse_client(settings)
    db = settings.clickhouse_database
    first = apply_clickhouse(client, SQL_DIR, db)
    assert "0001_pipeline_events" in first
    assert apply_clickhouse(client, SQL_DIR, db) == []
    edited = tmp_path / "sql"
    edited.mkdir()
    text = (SQL_DIR / "0001_pipeline_events.sql").read_text() + "\n-- edited\n"
    (edited / "0001_pipeline_events.sql").write_text(text)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_clickhouse(client, edited, db)
