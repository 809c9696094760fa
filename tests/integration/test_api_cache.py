"""The progress endpoint's per-learner cache on the real engines (PostgreSQL of the test stack, chDB database
``api_cache_it``), the app in-process with its change feed.

* new windows written for a learner (an INSERT, as the dataflow's sink does) show on the next read once the feed
  has polled, both when the test runs one poll itself and when the background thread does (within its interval);
* the cached body is the body the uncached path gives; the fast path answers the route's bytes and headers, plain
  and gzip;
* a learner's cached body is never served to another principal: 401/403/404 still apply with a warm cache.
"""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from runtime.clickhouse import get_clickhouse_client
from runtime.settings import PlatformSettings
from tests.analytics_fixtures import SEED_START, ApiWorld, auth_header, seed_api_world, served_api

pytestmark = pytest.mark.integration

POLL_S = 0.2
RANGE = {"from": "2024-01-01T00:00:00Z", "to": "2024-06-01T00:00:00Z"}


@pytest.fixture(scope="module")
def world(migrated_stack: PlatformSettings) -> ApiWorld:
    return seed_api_world(PlatformSettings(clickhouse_database="api_cache_it"), f"ac-{uuid.uuid4().hex[:6]}-")


@pytest.fixture(scope="module")
def client(world: ApiWorld) -> Iterator[TestClient]:
    app = create_app(world.platform, ApiSettings(progress_cache_poll_s=POLL_S))
    with TestClient(app) as test_client:
        yield test_client


def _write_daily_window(world: ApiWorld, user_id: str, day: datetime, word_count: int) -> None:
    """One daily window row as the metric dataflow's sink writes it (a plain INSERT of a new part)."""
    client = get_clickhouse_client(world.platform)
    table = f"{world.platform.clickhouse_database}.learner_metrics_windows"
    client.insert(
        table,
        [[user_id, "daily", day, day + timedelta(days=1), "UTC", day.date(), 1, day, day, word_count, 60.0, 45.0,
          120.0, 160.0, 10.0, 0.7, 5.0, 1.0, 0.0, 40, 60, 0.7, 55.0, True, 1, datetime.now(UTC)]],
        column_names=[
            "user_id", "window_kind", "window_start", "window_end", "timezone", "local_start_date", "submissions",
            "first_occurred_at", "last_occurred_at", "word_count", "total_duration_s", "phonation_time_s",
            "speech_rate_wpm_avg", "articulation_rate_wpm_avg", "silent_pauses_per_minute_avg",
            "mean_silent_pause_s_avg", "mean_length_of_run_avg", "filled_pauses_per_100_words",
            "repetitions_per_100_words", "distinct_words", "vocabulary_token_count", "mattr", "mtld",
            "vocabulary_sufficient", "metrics_version", "computed_at",
        ],
    )  # fmt: skip


def _daily(client: TestClient, world: ApiWorld, user_id: str, caller: str) -> dict[str, int]:
    response = client.get(f"/v1/users/{user_id}/progress", headers=auth_header(world, caller), params=RANGE)
    assert response.status_code == 200, response.text
    return {p["window_start"]: p["word_count"] for p in response.json()["series"]["daily"]}


def _reloaded(app: Any) -> None:
    """Wait until no learner is stale (its background reload landed); the deadline is only against a hang."""
    deadline = time.monotonic() + 60
    while app.state.progress_cache.stats()["stale"]:
        assert time.monotonic() < deadline, "the reload never landed"
        time.sleep(0.01)


def test_new_windows_show_on_the_read_after_the_next_poll_and_reload(client: TestClient, world: ApiWorld) -> None:
    """With stale-while-revalidate (COACH_API_PROGRESS_CACHE_STALE_S, on by default) the learner's previous
    entry is served, never a miss, until its background reload has read the new windows."""
    app: Any = client.app
    cache = app.state.progress_cache
    before = _daily(client, world, world.learner, "learner")
    assert cache.get(world.learner) is not None  # warm
    stored = cache.stats()["reloads_stored"]
    day = SEED_START + timedelta(days=world.days + 3)
    _write_daily_window(world, world.learner, day, word_count=4242)
    app.state.progress_feed.poll()  # what the feed's thread does every COACH_API_PROGRESS_CACHE_POLL_S
    assert cache.get(world.learner) is not None  # the previous entry (or already the new one): no miss
    _reloaded(app)
    assert cache.stats()["reloads_stored"] >= stored + 1
    after = _daily(client, world, world.learner, "learner")
    assert after["2024-02-15T00:00:00Z"] == 4242 and len(after) == len(before) + 1
    assert day == datetime(2024, 2, 15, tzinfo=UTC)


def test_the_feed_thread_invalidates_within_its_interval(client: TestClient, world: ApiWorld) -> None:
    """No manual poll: the background thread picks the new window up (the deadline is generous for a loaded
    machine; the documented bound is one interval plus one poll)."""
    _daily(client, world, world.mate, "admin")  # warm
    day = SEED_START + timedelta(days=world.days + 5)
    _write_daily_window(world, world.mate, day, word_count=777)
    key = day.strftime("%Y-%m-%dT%H:%M:%SZ")
    deadline = time.monotonic() + 60
    while key not in _daily(client, world, world.mate, "admin"):
        assert time.monotonic() < deadline, "the change feed never invalidated the learner"
        time.sleep(POLL_S / 2)
    assert _daily(client, world, world.mate, "admin")[key] == 777


def _raw_get(client: TestClient, path: str, headers: dict[str, str], params: Any) -> tuple[int, bytes, dict[str, str]]:
    """Status, body as sent (not decompressed) and headers."""
    with client.stream("GET", path, headers=headers, params=params) as response:
        return response.status_code, b"".join(response.iter_raw()), dict(response.headers)


@pytest.mark.parametrize("accept_encoding", ["identity", "gzip, deflate"])
def test_the_fast_path_answers_what_the_route_answers(
    client: TestClient, world: ApiWorld, accept_encoding: str
) -> None:
    """Same status, bytes and headers from the fast path (warm entry, ahead of FastAPI) and from the route, for
    plain and gzip-accepting clients; the gzip body is the plain body compressed."""
    app: Any = client.app
    path = f"/v1/users/{world.other}/progress"
    headers = {**auth_header(world, "other"), "Accept-Encoding": accept_encoding}
    query = {"window": ["weekly", "daily"], "from": "2024-01-10T00:00:00Z", "to": "2024-01-30T12:00:00Z"}
    assert _raw_get(client, path, headers, query)[0] == 200  # warm (and the token in the principal cache)
    fast_path, answered = app.fast_path, []

    async def serve(scope: Any, send: Any) -> bool:
        answered.append(await fast_path.serve(scope, send))
        return answered[-1]

    app.fast_path = SimpleNamespace(serve=serve)
    try:
        fast = _raw_get(client, path, headers, query)
        app.fast_path = None
        route = _raw_get(client, path, headers, query)
    finally:
        app.fast_path = fast_path
    assert answered == [True]  # the first answer came from the fast path
    assert fast == route and fast[0] == 200
    assert fast[2]["vary"] == "Accept-Encoding" and fast[2]["content-length"] == str(len(fast[1]))
    plain = _raw_get(client, path, {**auth_header(world, "other"), "Accept-Encoding": "identity"}, query)[1]
    if "gzip" in accept_encoding:
        assert fast[2]["content-encoding"] == "gzip" and gzip.decompress(fast[1]) == plain
    else:
        assert "content-encoding" not in fast[2] and fast[1] == plain


def test_cached_body_equals_the_uncached_body(client: TestClient, world: ApiWorld) -> None:
    params = [RANGE, {"window": ["weekly", "daily"], "from": "2024-01-10T00:00:00Z", "to": "2024-01-30T12:00:00Z"}]
    uncached_app = create_app(world.platform, ApiSettings(progress_cache_max_bytes=0))
    with TestClient(uncached_app) as uncached:
        for query in params:
            path = f"/v1/users/{world.other}/progress"
            cold = uncached.get(path, headers=auth_header(world, "other"), params=query)
            client.get(path, headers=auth_header(world, "other"), params=query)  # fills the cache
            warm = client.get(path, headers=auth_header(world, "other"), params=query)
            assert cold.status_code == warm.status_code == 200
            assert warm.content == cold.content
        assert uncached_app.state.progress_cache.stats()["entries"] == 0


@pytest.mark.parametrize(
    ("caller", "expected"),
    [("none", 401), ("garbage", 401), ("revoked", 401), ("learner", 404), ("coach_c", 404), ("mate", 404)],
)
def test_a_warm_entry_is_never_served_to_another_principal(
    client: TestClient, world: ApiWorld, caller: str, expected: int
) -> None:
    app: Any = client.app
    owner = client.get(f"/v1/users/{world.other}/progress", headers=auth_header(world, "other"), params=RANGE)
    assert owner.status_code == 200 and app.state.progress_cache.get(world.other) is not None
    headers = (
        {"Authorization": f"Bearer {_mate_token(world)}"} if caller == "mate" else auth_header(world, caller)
    )  # another learner of the same cohort
    response = client.get(f"/v1/users/{world.other}/progress", headers=headers, params=RANGE)
    assert response.status_code == expected, response.text
    assert set(response.json()) == {"error", "reason"} and world.other not in response.text.replace(
        f"user {world.other!r} not found", ""
    )


def test_each_principal_gets_its_own_learner(client: TestClient, world: ApiWorld) -> None:
    for caller, user in (("learner", world.learner), ("other", world.other)):
        body = client.get(f"/v1/users/{user}/progress", headers=auth_header(world, caller), params=RANGE).json()
        assert body["user_id"] == user
    # Readers allowed by the rule get the owner's body, byte for byte.
    own = client.get(f"/v1/users/{world.other}/progress", headers=auth_header(world, "other"), params=RANGE).content
    for caller in ("coach_b", "coach_a", "admin"):
        response = client.get(f"/v1/users/{world.other}/progress", headers=auth_header(world, caller), params=RANGE)
        assert response.status_code == 200 and response.content == own


_MATE_TOKENS: dict[str, str] = {}


def _mate_token(world: ApiWorld) -> str:
    """A learner key for ``mate`` (same cohort as ``other``), created once."""
    if world.mate not in _MATE_TOKENS:
        import psycopg

        from tests.analytics_fixtures import seed_key

        with psycopg.connect(world.platform.postgres_dsn, autocommit=True) as conn:
            _MATE_TOKENS[world.mate] = seed_key(conn, world.mate, "learner")
    return _MATE_TOKENS[world.mate]


def _http_get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()


def test_serve_api_answers_over_http_and_stops_on_its_event(client: TestClient, world: ApiWorld) -> None:
    """``serve_api`` in a thread of this process (as ``coach run`` does): the warm
    progress read over a real socket (the fast path) sends the route's bytes, plain and gzip, 401 without a token;
    setting the stop event ends the server and its thread."""
    route = f"/v1/users/{world.other}/progress"
    query = {"window": "weekly", "from": "2024-01-10T00:00:00Z", "to": "2024-01-30T12:00:00Z"}
    path = f"{route}?{urlencode(query)}"
    headers = {**auth_header(world, "other"), "Accept-Encoding": "identity"}
    with served_api(world.platform) as port:
        expected = _raw_get(client, route, headers, query)
        for _ in range(2):  # the first read fills this app's cache, the second is served by the fast path
            status, body, answered = _http_get(port, path, headers)
        assert (status, body) == (200, expected[1])
        assert answered["content-type"] == "application/json" and answered["content-length"] == str(len(body))
        status, zipped, answered = _http_get(port, path, {**headers, "Accept-Encoding": "gzip"})
        assert status == 200 and answered["content-encoding"] == "gzip" and gzip.decompress(zipped) == body
        assert _http_get(port, path, {})[0] == 401
