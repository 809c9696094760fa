"""Issue 16, item 4: failed bearer-token lookups are cached briefly and rate limited per client address, in the
lookup both APIs share (:func:`runtime.principals.lookup_principal`).

Queries are counted on a real PostgreSQL connection (a thin proxy counting ``execute`` calls).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from runtime.principals import create_api_key, lookup_principal
from runtime.settings import PlatformSettings

pytestmark = pytest.mark.integration


class CountingConnection:
    """A psycopg connection whose ``execute`` calls are counted."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn, self.queries = conn, 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return self.conn.execute(*args, **kwargs)


@pytest.fixture
def conn(migrated_stack: PlatformSettings) -> Iterator[CountingConnection]:
    with psycopg.connect(migrated_stack.postgres_dsn, autocommit=True) as raw:
        yield CountingConnection(raw)


@pytest.fixture(autouse=True)
def _fresh_failures() -> Iterator[None]:
    import runtime.principals

    clear = getattr(runtime.principals, "failed_lookups", None)  # absent before issue 16: nothing to clear
    if clear is not None:
        clear().clear()
    yield
    if clear is not None:
        clear().clear()


def bad_token() -> str:
    return "sc_" + secrets.token_urlsafe(32)


def test_a_failed_token_is_answered_from_the_negative_cache(conn: CountingConnection) -> None:
    token = bad_token()
    assert lookup_principal(conn, token) is None
    assert lookup_principal(conn, token) is None
    assert lookup_principal(conn, token) is None
    assert conn.queries == 1, "every retry of an unknown token cost a PostgreSQL query"


def test_failed_lookups_are_rate_limited_per_client_address(conn: CountingConnection) -> None:
    from runtime.principals import FailedLookups, LookupsRateLimited

    failed = FailedLookups(failures_per_minute=6, burst=5)
    for _ in range(5):
        assert lookup_principal(conn, bad_token(), address="203.0.113.7", failed=failed) is None
    assert conn.queries == 5
    with pytest.raises(LookupsRateLimited) as limited:
        lookup_principal(conn, bad_token(), address="203.0.113.7", failed=failed)
    assert limited.value.status_code == 429 and int(limited.value.headers["Retry-After"]) >= 1
    assert conn.queries == 5, "a rate-limited lookup still queried PostgreSQL"
    # another address is not affected, and a valid key from it still resolves
    token = create_api_key(conn.conn, f"neg-{uuid.uuid4().hex[:8]}", "learner")
    principal = lookup_principal(conn, token, address="198.51.100.1", failed=failed)
    assert principal is not None and principal.role == "learner"


def test_ingestion_answers_429_to_an_address_guessing_tokens(migrated_stack: PlatformSettings) -> None:
    from ingestion.app import create_app

    burst = 30  # COACH_AUTH_FAILURE_BURST's default
    with TestClient(create_app(migrated_stack)) as client:
        statuses = [
            client.post("/v1/submissions", headers={"Authorization": f"Bearer {bad_token()}"}).status_code
            for _ in range(burst + 1)
        ]
        last = client.post("/v1/submissions", headers={"Authorization": f"Bearer {bad_token()}"})
    assert statuses[:burst] == [401] * burst
    assert last.status_code == 429 and last.json()["error"] == "rate_limited", last.text
    assert int(last.headers["Retry-After"]) >= 1


def test_the_progress_api_shares_the_negative_cache(migrated_stack: PlatformSettings) -> None:
    from api.app import create_app
    from api.settings import ApiSettings
    from runtime.principals import failed_lookups

    token = bad_token()
    with TestClient(create_app(migrated_stack, ApiSettings(principal_cache_ttl_s=5))) as client:
        first = client.get("/v1/users/someone/progress", headers={"Authorization": f"Bearer {token}"})
        saved = failed_lookups().queries_saved
        second = client.get("/v1/users/someone/progress", headers={"Authorization": f"Bearer {token}"})
    assert first.status_code == second.status_code == 401
    assert failed_lookups().queries_saved == saved + 1, "the progress API looked the failed token up again"


@pytest.mark.unit
def test_one_bearer_parser() -> None:
    from runtime.principals import parse_bearer

    assert parse_bearer("Bearer sc_abc") == parse_bearer("bearer  sc_abc ") == "sc_abc"
    assert [parse_bearer(v) for v in (None, "", "Basic sc_abc", "Bearer", "Bearer a b")] == [None] * 5


@pytest.mark.unit
def test_one_read_rule_for_a_learner() -> None:
    import uuid as _uuid

    from api.access import read_decision
    from runtime.principals import Principal

    def who(role: str, user: str = "ana") -> Principal:
        return Principal(user_id=user, role=role, key_id=_uuid.uuid4())  # type: ignore[arg-type]

    assert read_decision(who("learner"), "ana") is True
    assert read_decision(who("learner"), "bo") is False
    assert read_decision(who("admin", "root"), "bo") is True
    assert read_decision(who("coach", "cora"), "bo") is None  # PostgreSQL decides (can_read_user)
