"""The warm read path of the progress API without engines: the principal cache's batch refresh (revocation still
bounded by its TTL), and the ASGI fast path (answers exactly the cached body, remembers query parses, leaves
everything it cannot answer to FastAPI)."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from api.encoding import progress_headers
from api.models import WINDOW_KINDS
from api.progress_cache import ProgressCache, build_learner_progress
from api.progress_fastpath import FastPathAPI, ProgressFastPath
from api.settings import ApiSettings
from api.time_range import resolve_range
from runtime.principals import PrincipalCache, hash_token
from tests.analytics_fixtures import learner_window_points

pytestmark = pytest.mark.unit

ANA, BO = "sc_ana-token", "sc_bo-token"
START = datetime(2024, 1, 1, tzinfo=UTC)


class _Keys:
    """A stand-in for the PostgreSQL pool: ``api_keys`` as a dict of token hash → (user, role, key id); counts
    queries."""

    def __init__(self, *tokens: tuple[str, str]) -> None:
        self.rows = {hash_token(token): (user, "learner", uuid.uuid4()) for token, user in tokens}
        self.queries = 0

    @contextmanager
    def connection(self) -> Iterator[Any]:
        yield self

    def execute(self, sql: str, params: tuple[Any, ...]) -> Any:
        self.queries += 1
        if "ANY" in sql:
            found = [(key, *self.rows[key]) for key in params[0] if key in self.rows]
            return SimpleNamespace(fetchall=lambda: found)
        row = self.rows.get(params[0])
        return SimpleNamespace(fetchone=lambda: row)


def _principals(clock: list[float]) -> PrincipalCache:
    return PrincipalCache(5.0, timer=lambda: clock[0])


def test_refresh_keeps_used_keys_valid_with_one_query() -> None:
    clock, keys = [0.0], _Keys((ANA, "ana"), (BO, "bo"))
    cache = _principals(clock)
    pool: Any = keys
    assert cache.resolve(ANA, pool) is not None and cache.resolve(BO, pool) is not None
    assert keys.queries == 2
    clock[0] = 2.5
    assert cache.refresh(pool) == (2, 0) and keys.queries == 3  # both resolved since the last refresh: one query
    clock[0] = 4.0
    assert cache.peek(ANA) is not None  # used: refreshed next time
    clock[0] = 5.0
    assert cache.refresh(pool) == (1, 0)  # only ana was used since the last refresh
    clock[0] = 9.0
    ana = cache.peek(ANA)
    assert ana is not None and ana.user_id == "ana"  # confirmed at 5.0, valid until 10.0
    assert cache.peek(BO) is None  # confirmed at 2.5, not used since: expired at 7.5


def test_refresh_drops_revoked_keys_and_revocation_stays_bounded_by_the_ttl() -> None:
    clock, keys = [0.0], _Keys((ANA, "ana"))
    cache = _principals(clock)
    pool: Any = keys
    cache.resolve(ANA, pool)
    keys.rows.clear()  # revoked at t = 0 (after the lookup)
    clock[0] = 4.9
    assert cache.peek(ANA) is not None  # within the TTL of the lookup, as before
    assert cache.refresh(pool) == (0, 1)
    assert cache.peek(ANA) is None and cache.resolve(ANA, pool) is None


def test_a_refresh_never_moves_an_entry_back_in_time() -> None:
    clock, keys = [0.0], _Keys((ANA, "ana"))
    cache = _principals(clock)
    pool: Any = keys
    cache.resolve(ANA, pool)
    original = keys.execute

    def late_lookup(sql: str, params: tuple[Any, ...]) -> Any:
        clock[0] = 3.0  # the query started at 1.0 and returns at 3.0 …
        return original(sql, params)

    clock[0] = 1.0
    keys.execute = late_lookup  # type: ignore[method-assign]
    assert cache.refresh(pool) == (1, 0)
    clock[0] = 5.5
    assert cache.peek(ANA) is not None  # … so the entry counts from 1.0 (valid until 6.0), not from 3.0
    clock[0] = 6.0
    assert cache.peek(ANA) is None


def test_a_disabled_principal_cache_refreshes_nothing() -> None:
    cache = PrincipalCache(0.0)
    pool: Any = _Keys((ANA, "ana"))
    assert cache.resolve(ANA, pool) is not None and cache.peek(ANA) is None
    assert cache.refresh(pool) == (0, 0)
    cache.start_refresh(pool)  # no thread with ttl 0
    cache.stop_refresh()


class _NoReader:
    """The fast path never reads ClickHouse."""


def _fast_path() -> tuple[ProgressFastPath, PrincipalCache, ProgressCache]:
    principals = PrincipalCache(60.0)
    reader: Any = _NoReader()
    progress = ProgressCache(reader, baseline_weeks=2, max_bytes=10**8, ttl_s=60.0)
    app: Any = SimpleNamespace(state=SimpleNamespace(principals=principals, progress_cache=progress))
    return ProgressFastPath(fastapi_app=app, settings=ApiSettings(), resolve_range=resolve_range), principals, progress


def _get(
    fast: ProgressFastPath, path: str, query: bytes, token: str | None, extra: list[tuple[bytes, bytes]] | None = None
) -> tuple[bool, list[MutableMapping[str, Any]]]:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    headers += extra or []
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": headers}
    return asyncio.run(fast.serve(scope, send)), sent


def test_fast_path_answers_the_cached_body_and_remembers_the_query_parse() -> None:
    fast, principals, progress = _fast_path()
    pool: Any = _Keys((ANA, "ana"))
    principals.resolve(ANA, pool)
    entry = build_learner_progress("ana", learner_window_points(), baseline_weeks=2)
    progress.put(entry, progress.generation())
    query = b"from=2024-01-02T00%3A00%3A00%2B00%3A00&to=2024-02-01T00%3A00%3A00Z&window=weekly&window=daily"
    for _ in range(2):
        served, sent = _get(fast, "/v1/users/ana/progress", query, ANA)
        assert served
        body = entry.render(("weekly", "daily"), START + timedelta(days=1), START + timedelta(days=31))
        assert sent[1]["body"] == body
        assert sent[0]["headers"] == [
            (b"vary", b"Accept-Encoding"),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]
    assert list(fast._queries) == [query]


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ([(b"accept-encoding", b"gzip, deflate")], True),
        ([(b"accept-encoding", b"br"), (b"accept-encoding", b"gzip;q=0.5")], True),  # two headers: one list
        ([(b"accept-encoding", b"gzip;q=0, br")], False),
        ([], False),
    ],
)
def test_fast_path_answers_gzip_to_clients_that_accept_it(accept: list[tuple[bytes, bytes]], gzipped: bool) -> None:
    fast, principals, progress = _fast_path()
    principals.resolve(ANA, _Keys((ANA, "ana")))  # type: ignore[arg-type]
    entry = build_learner_progress("ana", learner_window_points(), baseline_weeks=2)
    progress.put(entry, progress.generation())
    served, sent = _get(fast, "/v1/users/ana/progress", b"from=2024-01-02&to=2024-02-01", ANA, accept)
    plain = entry.render(WINDOW_KINDS, START + timedelta(days=1), START + timedelta(days=31))
    assert served
    body = sent[1]["body"]
    assert (gzip.decompress(body) if gzipped else body) == plain
    assert sent[0]["headers"] == progress_headers(body, gzipped)
    assert ((b"content-encoding", b"gzip") in sent[0]["headers"]) is gzipped
    assert dict(sent[0]["headers"])[b"vary"] == b"Accept-Encoding"


@pytest.mark.parametrize(
    ("path", "query", "token"),
    [
        ("/v1/users/bo/progress", b"", ANA),  # another learner: the route answers 404
        ("/v1/users/ana/progress", b"", None),  # no token: 401
        ("/v1/users/ana/progress", b"", BO),  # a token not in the principal cache: PostgreSQL
        ("/v1/users/ana/progress", b"window=monthly", ANA),  # 422
        ("/v1/users/ana/progress", b"from=yesterday", ANA),  # 422
        ("/v1/users/ana/progress", b"limit=3", ANA),  # a parameter the fast path does not know
        ("/v1/users/cy/progress", b"", ANA),  # not cached (and not readable)
        ("/v1/users/ana/submissions", b"", ANA),  # another route
    ],
)
def test_fast_path_leaves_everything_else_to_fastapi(path: str, query: bytes, token: str | None) -> None:
    fast, principals, progress = _fast_path()
    principals.resolve(ANA, _Keys((ANA, "ana")))  # type: ignore[arg-type]
    progress.put(build_learner_progress("ana", learner_window_points(), baseline_weeks=2), progress.generation())
    assert _get(fast, path, query, token) == (False, [])


def test_query_memo_is_bounded() -> None:
    fast, principals, progress = _fast_path()
    principals.resolve(ANA, _Keys((ANA, "ana")))  # type: ignore[arg-type]
    progress.put(build_learner_progress("ana", learner_window_points(), baseline_weeks=2), progress.generation())
    for day in range(1, 20):
        _get(fast, "/v1/users/ana/progress", f"to=2024-02-{day:02d}".encode(), ANA)
    long_query = b"window=daily&" * 60 + b"window=weekly"
    assert _get(fast, "/v1/users/ana/progress", long_query, ANA)[0]
    assert len(fast._queries) == 19 and long_query not in fast._queries  # long query strings are not kept


def test_fast_path_api_serves_before_fastapi() -> None:
    from fastapi.testclient import TestClient

    class _Fast:
        async def serve(self, scope: Any, send: Any) -> bool:
            if scope.get("path") != "/fast":
                return False
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"fast"})
            return True

    app = FastPathAPI()
    app.fast_path = _Fast()  # type: ignore[assignment]

    @app.get("/slow")
    def slow() -> dict[str, str]:
        return {"route": "slow"}

    @app.get("/fast")
    def fast() -> dict[str, str]:
        return {"route": "fast"}

    with TestClient(app) as client:  # lifespan and everything not answered pass through
        assert client.get("/slow").json() == {"route": "slow"}
        assert client.get("/fast").content == b"fast"
