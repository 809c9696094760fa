"""Projections: events -> PostgreSQL read models, their migrations, and Debezium's registration."""

from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"
"""PostgreSQL migrations (``NNNN_name.sql``), applied in order by ``coach migrate``."""

__all__ = ["SQL_DIR"]
