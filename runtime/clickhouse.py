"""The ClickHouse client factory: embedded chDB or a ClickHouse server, chosen by settings.

Both are clickhouse-connect clients (https://clickhouse.com/docs/integrations/python), so the code
above is the same in the local mode (``chdb://<dir>``, in-process, one process per data directory)
and with containers (``http://clickhouse:8123``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from runtime.settings import PlatformSettings

__all__ = ["get_clickhouse_client", "is_embedded"]

_chdb_lock = threading.Lock()
_chdb_clients: dict[tuple[str, str], Client] = {}


def is_embedded(dsn: str) -> bool:
    """True when ``dsn`` points at embedded chDB (``chdb://…``)."""
    return dsn.startswith("chdb://")


def get_clickhouse_client(
    settings: PlatformSettings | None = None,
    *,
    database: str | None = None,
    new: bool = False,
    create_database: bool = True,
) -> Client:
    """Return a clickhouse-connect client for ``settings.clickhouse_dsn``: the one opener of ClickHouse.

    * ``chdb://<path>``: embedded chDB with its data under ``<path>`` (created if missing). chDB runs one engine
      per process on one data directory (a second path raises ``RuntimeError``); any number of handles may share
      it. One client per (path, database) is cached and shared within the process; pass ``new=True`` for a
      private handle (e.g. one per thread of an HTTP server).
    * ``http(s)://[user:password@]host:port[/database]``: a ClickHouse server over HTTP (a new client each call;
      clickhouse-connect clients are not thread-safe, keep one per thread).

    ``database`` (default ``settings.clickhouse_database``) is created if missing (unless ``create_database`` is
    false: read-only users) and used by default. The chDB path is absolute since the settings loaded
    (:func:`runtime.settings.absolute_chdb_dsn`), so the working directory at the time of the call does not
    matter. Raises ``ValueError`` on another scheme, and clickhouse-connect's errors when the
    server is unreachable.
    """
    settings = settings or PlatformSettings()
    dsn = settings.clickhouse_dsn
    database = database or settings.clickhouse_database
    if is_embedded(dsn):
        path = Path(dsn.removeprefix("chdb://"))
        if not path.is_absolute():  # a DSN built by hand, not by PlatformSettings
            raise ValueError(f"chDB path must be absolute, got {dsn!r}")
        key = (str(path), database)
        with _chdb_lock:
            client = None if new else _chdb_clients.get(key)
            if client is None:
                path.mkdir(parents=True, exist_ok=True)
                client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
                client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
                client.database = database
                if not new:
                    _chdb_clients[key] = client
        return client
    scheme = urlsplit(dsn).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"COACH_CLICKHOUSE_URL must be chdb://<dir> or http(s)://host:port, got {dsn!r}")
    if create_database:
        admin = clickhouse_connect.get_client(dsn=dsn)
        admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        admin.close()
    return clickhouse_connect.get_client(dsn=dsn, database=database)
