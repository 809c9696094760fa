"""A grafana-foundation-sdk query builder for the ClickHouse data source plugin (grafana-clickhouse-datasource v4).

The SDK ships builders for Grafana's own and some third-party data sources, not for ClickHouse, so this module adds
one the SDK way: a ``Dataquery`` variant with ``to_json`` and a ``Builder`` for it. The JSON is the plugin's SQL
editor query (``editorType: sql``, ``rawSql``, ``queryType``; ``format`` 0 = time series, 1 = table, as the plugin's
backend reads it).
"""

from __future__ import annotations

import enum
from typing import Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

__all__ = ["PLUGIN_ID", "ClickHouseQuery", "ClickHouseQueryModel", "QueryType"]

PLUGIN_ID = "grafana-clickhouse-datasource"


class QueryType(enum.StrEnum):
    """How the plugin shapes the result: a time series (first DateTime column is time, a String column splits
    series) or a table."""

    TIME_SERIES = "timeSeries"
    TABLE = "table"


_FORMAT = {QueryType.TIME_SERIES: 0, QueryType.TABLE: 1}


class ClickHouseQueryModel(cogvariants.Dataquery):
    """The target of a panel: SQL run by the ClickHouse plugin."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        query_type: QueryType = QueryType.TIME_SERIES,
        datasource: DataSourceRef | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.query_type = query_type
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        """The plugin's query JSON."""
        out: dict[str, object] = {
            "refId": self.ref_id,
            "editorType": "sql",
            "queryType": str(self.query_type),
            "format": _FORMAT[self.query_type],
            "rawSql": self.raw_sql,
        }
        if self.datasource is not None:
            out["datasource"] = self.datasource.to_json()
        return out


class ClickHouseQuery(cogbuilder.Builder[ClickHouseQueryModel]):
    """Builder of :class:`ClickHouseQueryModel` (``.raw_sql(...).table()``)."""

    def __init__(self) -> None:
        self._internal = ClickHouseQueryModel()

    def build(self) -> ClickHouseQueryModel:
        """The query."""
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        """Name of the query within the panel (A, B…)."""
        self._internal.ref_id = ref_id
        return self

    def raw_sql(self, sql: str) -> Self:
        """The SQL, with the plugin's macros (``$__timeFilter(col)``…) and Grafana variables (``${name}``)."""
        self._internal.raw_sql = sql.strip()
        return self

    def table(self) -> Self:
        """Shape the result as a table."""
        self._internal.query_type = QueryType.TABLE
        return self

    def datasource(self, ref: DataSourceRef) -> Self:
        """The data source instance."""
        self._internal.datasource = ref
        return self
