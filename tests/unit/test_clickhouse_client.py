"""The ClickHouse client factory on embedded chDB, and its DSN validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickhouse import SQL_DIR
from runtime.clickhouse import get_clickhouse_client
from runtime.settings import PlatformSettings
from runtime.sql_migrations import MigrationError, apply_clickhouse

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> PlatformSettings:
    return PlatformSettings(home=tmp_path_factory.mktemp("home"))


def test_chdb_merge_tree_create_insert_query(settings: PlatformSettings) -> None:
    client = get_clickhouse_client(settings)
    assert settings.clickhouse_dsn.startswith("chdb://")
    client.command("CREATE TABLE IF NOT EXISTS probe (k UInt32, v String) ENGINE = MergeTree ORDER BY k")
    client.insert("probe", [[1, "a"], [2, "b"], [3, "c"]], column_names=["k", "v"])
    assert client.query("SELECT count(), sum(k) FROM probe").result_rows == [(3, 6)]
    engine = client.query(
        "SELECT engine FROM system.tables WHERE database = 'coach' AND name = 'probe'"
    ).result_rows
    assert engine == [("MergeTree",)]
    data_dir = Path(settings.clickhouse_dsn.removeprefix("chdb://"))
    assert data_dir.is_dir() and any(data_dir.iterdir())


def test_same_path_shares_one_client(settings: PlatformSettings) -> None:
    assert get_clickhouse_client(settings) is get_clickhouse_client(settings)


def test_unknown_scheme_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chdb://<dir> or http"):
        get_clickhouse_client(PlatformSettings(home=tmp_path, clickhouse_url="mysql://x"))


def test_migrations_apply_once_and_refuse_edits(settings: PlatformSettings, tmp_path: Path) -> None:
    client = get_clickhouse_client(settings)
    first = apply_clickhouse(client, SQL_DIR, "coach")
    assert "0001_pipeline_events" in first
    assert apply_clickhouse(client, SQL_DIR, "coach") == []
    edited = tmp_path / "sql"
    edited.mkdir()
    text = (SQL_DIR / "0001_pipeline_events.sql").read_text() + "\n-- edited\n"
    (edited / "0001_pipeline_events.sql").write_text(text)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_clickhouse(client, edited, "coach")
