"""Issue 16, item 4: limits of both HTTP APIs, over real sockets on loopback.

* The must-show slow-client check: a few hundred sockets trickle request headers at both APIs (loopback only,
  the trickle stops by itself after at most ``TRICKLE_BUDGET_S``); ``/healthz`` of both keeps answering within a
  second (an httpx request timeout of 1 s, a functional deadline), and the servers close every trickling socket
  (their header deadline) before its trickle would have ended.
* A stalled request body is answered 408; requests past the in-flight limit get 503 while ``/healthz`` answers.
* Failed token lookups from one address over the real server get 429.
* Rendered progress pages are cached per learner, rendered off the shared thread pool, and invalidated with the
  learner's progress-cache entry.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.settings import ApiSettings
from coach.services import http_service
from ingestion.app import create_app as create_ingestion_app
from ingestion.settings import IngestionSettings
from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from tests.analytics_fixtures import ApiWorld, auth_header, seed_api_world, served_api
from tests.thread_servers import free_port, serving

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 4.0
BODY_TIMEOUT_S = 2.0
SLOW_SOCKETS_PER_API = 150
TRICKLE_BUDGET_S = 20.0
"""A trickling client gives up after this long (so the check stops by itself even against a server without a
header deadline); with the deadline, the servers close the sockets after ``HEADER_TIMEOUT_S``."""


@pytest.fixture(scope="module")
def ingestion_port(migrated_stack: PlatformSettings) -> Iterator[int]:
    """The ingestion API served as ``coach run`` serves it (:func:`coach.services.http_service`)."""
    port = free_port()
    settings = IngestionSettings(
        host="127.0.0.1",
        port=port,
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        max_requests_in_flight=1,
    )
    service = http_service("ingestion-api", lambda: create_ingestion_app(migrated_stack, settings), "127.0.0.1", port)
    with serving(service.run, port, "the ingestion API"):
        yield port


@pytest.fixture(scope="module")
def api_port(migrated_stack: PlatformSettings) -> Iterator[int]:
    """The progress API served by :func:`api.app.serve_api` (uvicorn), header deadline from the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COACH_API_HEADER_TIMEOUT_S", str(HEADER_TIMEOUT_S))
        with served_api(migrated_stack) as port:
            yield port


@pytest.fixture(scope="module")
def token(migrated_stack: PlatformSettings) -> str:
    with psycopg.connect(migrated_stack.postgres_dsn, autocommit=True) as conn:
        return create_api_key(conn, f"limits-{uuid.uuid4().hex[:8]}", "learner")


async def _trickle(port: int, budget_s: float) -> bool:
    """Open a connection and send a request's headers one byte every 0.5 s, never finishing them; returns whether
    the server closed the connection before ``budget_s`` passed (the client then gives up on its own)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await writer.drain()
        while time.monotonic() - started < budget_s:
            try:
                data = await asyncio.wait_for(reader.read(1024), 0.5)
            except TimeoutError:
                try:
                    writer.write(b"a")
                    await writer.drain()
                except (ConnectionError, OSError):
                    return True
                continue
            return data == b"" or data.startswith(b"HTTP/1.1 408")
        return False
    except (ConnectionError, OSError):
        return True
    finally:
        writer.close()


async def _probe(ports: list[int], until: asyncio.Event) -> list[str]:
    """GET /healthz of every port every 0.25 s with a 1-s timeout until ``until``; returns the failures."""
    failures: list[str] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as client:
        while not until.is_set():
            for port in ports:
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/healthz")
                    if response.status_code != 200:
                        failures.append(f"{port}: {response.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(f"{port}: {type(exc).__name__}")
            await asyncio.sleep(0.25)
    return failures


async def _slow_clients(ports: list[int]) -> tuple[list[bool], list[str]]:
    done = asyncio.Event()
    probe = asyncio.create_task(_probe(ports, done))
    results = await asyncio.gather(
        *(_trickle(port, TRICKLE_BUDGET_S) for port in ports for _ in range(SLOW_SOCKETS_PER_API))
    )
    await asyncio.sleep(0.5)
    done.set()
    return list(results), await probe


def test_slow_header_clients_are_cut_off_and_healthz_keeps_answering(ingestion_port: int, api_port: int) -> None:
    closed, failures = asyncio.run(_slow_clients([ingestion_port, api_port]))
    assert failures == [], f"/healthz did not answer within 1 s: {failures[:10]} ({len(failures)} in all)"
    assert len(closed) == 2 * SLOW_SOCKETS_PER_API
    assert all(closed), f"{closed.count(False)} trickling sockets were still open when their clients gave up"


def test_stalled_body_is_408_and_in_flight_limit_is_503(ingestion_port: int, token: str) -> None:
    with socket.create_connection(("127.0.0.1", ingestion_port), timeout=BODY_TIMEOUT_S + 15) as slow:
        slow.sendall(
            b"POST /v1/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n--xyz\r\n"
        )
        time.sleep(0.5)  # the upload is in flight, waiting for its body
        with httpx.Client(timeout=httpx.Timeout(5.0)) as client:
            second = client.post(
                f"http://127.0.0.1:{ingestion_port}/v1/submissions", headers={"Authorization": f"Bearer {token}"}
            )
            health = client.get(f"http://127.0.0.1:{ingestion_port}/healthz")
        assert second.status_code == 503 and second.json()["error"] == "overloaded", second.text
        assert int(second.headers["Retry-After"]) >= 1
        assert health.status_code == 200
        answer = slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout" in answer


def test_guessing_tokens_from_one_address_gets_429(api_port: int) -> None:
    from runtime.principals import failed_lookups

    failed_lookups().clear()
    try:
        with httpx.Client(timeout=httpx.Timeout(5.0)) as client:
            statuses = [
                client.get(
                    f"http://127.0.0.1:{api_port}/v1/users/x/progress",
                    headers={"Authorization": f"Bearer sc_guess-{uuid.uuid4().hex}"},
                ).status_code
                for _ in range(int(failed_lookups().burst) + 2)
            ]
    finally:
        failed_lookups().clear()
    assert statuses[0] == 401
    assert statuses[-1] == 429, statuses


@pytest.fixture(scope="module")
def world(migrated_stack: PlatformSettings) -> ApiWorld:
    return seed_api_world(PlatformSettings(clickhouse_database="api_limits_it"), f"hl-{uuid.uuid4().hex[:6]}-")


def test_progress_pages_are_cached_rendered_off_the_shared_pool_and_invalidated(
    world: ApiWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.page
    from api.app import create_app
    from api.charts import CHARTS

    renders: list[str] = []
    real = api.page.render_chart_svg

    def counted(*args: Any, **kwargs: Any) -> str:
        renders.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(api.page, "render_chart_svg", counted)
    params = {"from": "2024-01-01T00:00:00Z", "to": "2024-04-01T00:00:00Z"}
    settings = ApiSettings(progress_cache_stale_s=0)
    with TestClient(create_app(world.platform, settings)) as client:
        url, headers = f"/progress/{world.learner}", auth_header(world, "learner")
        first = client.get(url, headers=headers, params=params)
        second = client.get(url, headers=headers, params=params)
        assert first.status_code == second.status_code == 200
        assert first.text == second.text
        assert len(renders) == len(CHARTS), f"{len(renders)} charts rendered for two identical requests"
        assert all(name.startswith("progress-page-render") for name in renders), set(renders)
        # the ?token= of a request is put into the links, never served from another request's page
        with_token = client.get(url, params={**params, "token": world.tokens["learner"]})
        assert with_token.status_code == 200 and world.tokens["learner"] in with_token.text
        assert world.tokens["learner"] not in client.get(url, headers=headers, params=params).text
        assert len(renders) == len(CHARTS)
        client.app.state.progress_cache.invalidate([world.learner])  # type: ignore[attr-defined]
        assert client.get(url, headers=headers, params=params).status_code == 200
        assert len(renders) == 2 * len(CHARTS), "the page was not re-rendered after the learner's windows changed"
