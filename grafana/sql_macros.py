"""Expand panel SQL the way Grafana and the ClickHouse plugin do before it reaches ClickHouse, so the dashboards'
queries can be run (and tested) outside Grafana.

Two steps, in Grafana's order:

1. Grafana's template variables: ``${name}`` and ``$name`` are replaced by the variable's value (single-valued
   variables; the ClickHouse plugin's default format pastes the value raw). ``${name:format}`` applies one of
   Grafana's formats (``public/app/features/templating/formatRegistry.ts``): ``raw``, ``percentencode``
   (``encodeURIComponent`` plus ``!'()*``), ``sqlstring`` (quoted, ``'`` doubled), ``singlequote`` and
   ``doublequote`` (quoted, the quote backslash-escaped). The dashboards use ``percentencode`` (see
   :func:`grafana.dashboards.sql_string`).
2. The plugin's macros (grafana-clickhouse-datasource ``pkg/macros``): ``$__timeFilter(col)`` →
   ``col >= toDateTime(<from s>) AND col <= toDateTime(<to s>)``; ``$__timeFilter_ms(col)`` with
   ``fromUnixTimestamp64Milli(<ms>)``; ``$__fromTime``/``$__toTime`` → ``toDateTime(<s>)``;
   ``$__fromTime_ms``/``$__toTime_ms``; ``$__timeInterval(col)`` →
   ``toStartOfInterval(toDateTime(col), INTERVAL <interval s> second)``; ``$__interval_s`` → the interval in
   seconds (at least 1).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import datetime

__all__ = ["FORMATS", "VARIABLE", "UnknownMacro", "expand"]

_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")
"""A template variable reference: group 1 the name and group 2 the format of ``${name:format}``, group 3 the name
of ``$name`` (macros ``$__…`` excluded)."""

FORMATS: dict[str, Callable[[str], str]] = {
    "raw": lambda value: value,
    # encodeURIComponentStrict: RFC 3986 unreserved characters stay, everything else is %XX of its UTF-8 bytes
    "percentencode": lambda value: urllib.parse.quote(value, safe="", encoding="utf-8"),
    "sqlstring": lambda value: "'" + value.replace("'", "''") + "'",
    "singlequote": lambda value: "'" + value.replace("'", "\\'") + "'",
    "doublequote": lambda value: '"' + value.replace('"', '\\"') + '"',
}
"""Grafana's variable formats for a single value, as the Grafana front end applies them."""


class UnknownMacro(ValueError):
    """A ``$__name`` the plugin does not define, a missing argument, or an undefined variable."""


def expand(sql: str, start: datetime, end: datetime, variables: Mapping[str, str], interval_s: int = 60) -> str:
    """``sql`` with variables and macros replaced for the time range ``[start, end]`` (tz-aware) and the
    panel interval ``interval_s``. Raises :class:`UnknownMacro`."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name not in variables:
            raise UnknownMacro(f"undefined variable ${name}")
        fmt = match.group(2) or "raw"
        if fmt not in FORMATS:
            raise UnknownMacro(f"unknown variable format {fmt!r} in {match.group(0)}")
        return FORMATS[fmt](variables[name])

    sql = VARIABLE.sub(variable, sql)
    seconds = {"from": int(start.timestamp()), "to": int(end.timestamp())}
    millis = {"from": int(start.timestamp() * 1000), "to": int(end.timestamp() * 1000)}
    interval = max(int(interval_s), 1)

    def macro(match: re.Match[str]) -> str:
        name, arg = match.group(1), (match.group(2) or "").strip()
        if name in ("fromTime", "toTime"):
            return f"toDateTime({seconds[name[:-4]]})"
        if name in ("fromTime_ms", "toTime_ms"):
            return f"fromUnixTimestamp64Milli({millis[name[:-7]]})"
        if name == "interval_s":
            return str(interval)
        if not arg:
            raise UnknownMacro(f"$__{name} needs a column argument")
        if name == "timeFilter":
            return f"{arg} >= toDateTime({seconds['from']}) AND {arg} <= toDateTime({seconds['to']})"
        if name == "timeFilter_ms":
            return (
                f"{arg} >= fromUnixTimestamp64Milli({millis['from']}) AND "
                f"{arg} <= fromUnixTimestamp64Milli({millis['to']})"
            )
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({arg}), INTERVAL {interval} second)"
        raise UnknownMacro(f"unknown macro $__{name}")

    return _MACRO.sub(macro, sql)
