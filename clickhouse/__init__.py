"""ClickHouse DDL migrations (``sql/NNNN_name.sql``; ``{{db}}`` is the target database)."""

from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"
"""ClickHouse migrations, applied in order by ``coach migrate`` on chDB and servers alike."""

__all__ = ["SQL_DIR"]
