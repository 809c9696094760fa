"""The progress API on the real engines: PostgreSQL of the local stack, ClickHouse (chDB, a database of its own)
seeded with metric rows, the app in-process (its lifespan opens the pools).

Covers the authorization matrix of every endpoint (401 without or with a bad/revoked token, 404 for another
learner or a coach outside the learner's cohort, 403 for a learner on cohort views, 200 for the learner itself, its
coaches and admins), read-only sessions, and the content of each endpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from runtime.settings import PlatformSettings
from tests.analytics_fixtures import ApiWorld, auth_header, seed_api_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(migrated_stack: PlatformSettings) -> ApiWorld:
    """The test stack's PostgreSQL; ClickHouse database ``api_it`` in the session's chDB."""
    return seed_api_world(PlatformSettings(clickhouse_database="api_it"), f"api-{uuid.uuid4().hex[:6]}-")


@pytest.fixture(scope="module")
def client(world: ApiWorld) -> Iterator[TestClient]:
    app = create_app(world.platform, ApiSettings(principal_cache_ttl_s=0, page_size=3))
    with TestClient(app) as test_client:
        yield test_client


RANGE = {"from": "2024-01-01T00:00:00Z", "to": "2024-03-01T00:00:00Z"}

# What each caller gets on the resources of learner `other` (cohort c, coached by coach_b).
USER_MATRIX = {
    "none": 401,
    "garbage": 401,
    "revoked": 401,
    "learner": 404,  # another learner
    "coach_c": 404,  # coach outside other's cohort
    "other": 200,  # itself
    "coach_b": 200,  # its coach
    "coach_a": 200,  # coach of its cohort
    "admin": 200,
}
COHORT_MATRIX = {"none": 401, "garbage": 401, "learner": 403, "coach_c": 404, "coach_a": 200, "admin": 200}
USER_ENDPOINTS = (
    "/v1/users/{user}/progress",
    "/v1/users/{user}/submissions",
    "/v1/submissions/{sid}",
    "/progress/{user}",
)


@pytest.mark.parametrize("endpoint", USER_ENDPOINTS)
@pytest.mark.parametrize(("caller", "expected"), sorted(USER_MATRIX.items()))
def test_authorization_matrix_on_a_learner(
    client: TestClient, world: ApiWorld, endpoint: str, caller: str, expected: int
) -> None:
    path = endpoint.format(user=world.other, sid=world.other_submission.submission_id)
    response = client.get(path, headers=auth_header(world, caller), params=RANGE if "progress" in path else None)
    assert response.status_code == expected, response.text
    if expected != 200:
        body = response.json()
        assert set(body) == {"error", "reason"}
    if expected == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("caller", "expected"), sorted(COHORT_MATRIX.items()))
def test_authorization_matrix_on_cohort_progress(
    client: TestClient, world: ApiWorld, caller: str, expected: int
) -> None:
    response = client.get(f"/v1/cohorts/{world.cohort}/progress", headers=auth_header(world, caller), params=RANGE)
    assert response.status_code == expected, response.text


@pytest.mark.parametrize(("caller", "expected"), [("none", 401), ("learner", 403), ("coach_a", 200), ("admin", 200)])
def test_authorization_matrix_on_cohort_list(client: TestClient, world: ApiWorld, caller: str, expected: int) -> None:
    assert client.get("/v1/cohorts", headers=auth_header(world, caller)).status_code == expected


def test_page_accepts_the_token_in_the_query(client: TestClient, world: ApiWorld) -> None:
    ok = client.get(f"/progress/{world.other}", params={"token": world.tokens["other"], **RANGE})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/html")
    assert client.get(f"/progress/{world.other}", params={"token": world.tokens["learner"]}).status_code == 404
    assert client.get(f"/progress/{world.other}", params={"token": "sc_nope"}).status_code == 401


def test_sessions_are_read_only(client: TestClient, world: ApiWorld) -> None:
    app: Any = client.app
    with app.state.pg_pool.connection() as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO learners (user_id) VALUES ('api-write-probe')")
    reader = app.state.clickhouse
    with pytest.raises(Exception, match="READONLY|readonly"):
        reader.rows(f"INSERT INTO {reader.table('late_events')} (user_id) VALUES ('x')")
    with pytest.raises(Exception, match="READONLY|readonly"):
        reader.rows(f"DROP TABLE {reader.table('late_events')}")


def test_progress_series_and_summary(client: TestClient, world: ApiWorld) -> None:
    response = client.get(f"/v1/users/{world.learner}/progress", headers=auth_header(world, "learner"), params=RANGE)
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == world.learner and body["from"] == "2024-01-01T00:00:00Z"
    series = body["series"]
    assert set(series) == {"daily", "weekly", "sliding_7d"}
    assert len(series["daily"]) == world.days  # one submission a day
    assert all(p["submissions"] == 1 for p in series["daily"])
    starts = [p["window_start"] for p in series["weekly"]]
    assert starts == sorted(starts) and len(starts) == world.days // 7  # from Monday 2024-01-01
    summary = body["summary"]
    assert summary["baseline"]["start"] == "2024-01-01T00:00:00Z" and summary["baseline"]["weeks"] == 2
    changes = {c["metric"]: c for c in summary["changes"]}
    assert changes["speech_rate_wpm"]["direction"] == "improved" and changes["speech_rate_wpm"]["change"] > 0
    assert changes["silent_pauses_per_minute"]["direction"] == "improved"
    assert changes["silent_pauses_per_minute"]["change"] < 0


def test_progress_filters_kind_and_range(client: TestClient, world: ApiWorld) -> None:
    params = {"window": ["weekly"], "from": "2024-01-08T00:00:00Z", "to": "2024-01-22T00:00:00Z"}
    body = client.get(f"/v1/users/{world.learner}/progress", headers=auth_header(world, "admin"), params=params).json()
    assert list(body["series"]) == ["weekly"]
    assert [p["window_start"] for p in body["series"]["weekly"]] == ["2024-01-08T00:00:00Z", "2024-01-15T00:00:00Z"]
    assert body["summary"]["baseline"]["start"] == "2024-01-01T00:00:00Z"  # first weeks, whatever the range
    bad = {"from": "2024-02-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}
    response = client.get(f"/v1/users/{world.learner}/progress", headers=auth_header(world, "admin"), params=bad)
    assert response.status_code == 422 and response.json()["error"] == "invalid"


def test_progress_of_a_user_without_data_is_empty(client: TestClient, world: ApiWorld) -> None:
    body = client.get("/v1/users/nobody-at-all/progress", headers=auth_header(world, "admin")).json()
    assert body["series"] == {"daily": [], "weekly": [], "sliding_7d": []}
    assert body["summary"]["baseline"] is None


def test_submission_detail(client: TestClient, world: ApiWorld) -> None:
    sid = world.submissions[0].submission_id
    body = client.get(f"/v1/submissions/{sid}", headers=auth_header(world, "learner")).json()
    assert body["submission_id"] == str(sid) and body["status"] == "feedback"
    assert [t["status"] for t in body["timeline"]] == ["received", "transcribed", "feedback"]
    assert body["transcript"]["text"] == "Hello there." and body["transcript"]["words"] is None
    assert body["metrics"]["speech_rate_wpm"] == pytest.approx(128.3) and body["metrics"]["metrics_version"] == 1
    # a row of before migration 0007 (2 fillers stored, hesitation_detection defaulted to false): unknown, not 2
    metrics = body["metrics"]
    assert metrics["hesitation_detection"] is False and metrics["speech_rate_sps"] is None
    assert (metrics["filled_pause_count"], metrics["filled_pauses"], metrics["filled_pauses_per_minute"]) == (None,) * 3
    assert body["feedback"]["points"][0]["kind"] == "went_well"
    with_words = client.get(
        f"/v1/submissions/{sid}", headers=auth_header(world, "learner"), params={"include_words": True}
    )
    assert with_words.json()["transcript"]["words"][0]["word"] == " Hello"
    pending = world.submissions[-1].submission_id
    body = client.get(f"/v1/submissions/{pending}", headers=auth_header(world, "learner")).json()
    assert body["status"] == "received" and body["transcript"] is None and body["metrics"] is None
    missing = client.get(f"/v1/submissions/{uuid.uuid4()}", headers=auth_header(world, "admin"))
    assert missing.status_code == 404


def test_submissions_cursor_pagination(client: TestClient, world: ApiWorld) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"cursor": cursor} if cursor else {}
        page = client.get(
            f"/v1/users/{world.learner}/submissions", headers=auth_header(world, "learner"), params=params
        )
        assert page.status_code == 200
        body = page.json()
        assert len(body["items"]) <= 3
        seen += [item["submission_id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    expected = [str(s.submission_id) for s in sorted(world.submissions, key=lambda s: s.received_at, reverse=True)]
    assert seen == expected
    first = client.get(f"/v1/users/{world.learner}/submissions", headers=auth_header(world, "learner")).json()["items"][
        0
    ]
    assert first["status"] == "received" and first["speech_rate_wpm"] is None
    done = client.get(
        f"/v1/users/{world.learner}/submissions", headers=auth_header(world, "learner"), params={"status": "feedback"}
    ).json()["items"]
    assert done and all(i["status"] == "feedback" and i["speech_rate_wpm"] == pytest.approx(128.3) for i in done)
    assert all("speech_rate_sps" in i and i["speech_rate_sps"] is None for i in done)  # a row of before 0007
    bad = client.get(
        f"/v1/users/{world.learner}/submissions", headers=auth_header(world, "learner"), params={"cursor": "x"}
    )
    assert bad.status_code == 422


def test_cohort_views(client: TestClient, world: ApiWorld) -> None:
    listed = client.get("/v1/cohorts", headers=auth_header(world, "coach_a")).json()["items"]
    assert {"cohort": world.cohort, "learners": 3} in listed
    assert world.stranger_cohort not in [c["cohort"] for c in listed]
    body = client.get(
        f"/v1/cohorts/{world.cohort}/progress", headers=auth_header(world, "coach_a"), params=RANGE
    ).json()
    assert [lr["user_id"] for lr in body["learners"]] == sorted([world.learner, world.other, world.mate])
    assert all(lr["submissions"] > 0 for lr in body["learners"])
    assert body["series"] and all(p["learners"] == 3 for p in body["series"])
    assert body["series"][-1]["values"]["speech_rate_wpm"] > body["series"][0]["values"]["speech_rate_wpm"]


def test_operations_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "clickhouse": "ok"}
    assert "coach_api_request_seconds" in client.get("/metrics/").text
    assert "/v1/users/{user_id}/progress" in client.get("/openapi.json").json()["paths"]
