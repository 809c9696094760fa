"""The whole chain in one process, as ``coach run`` starts it: upload → transcript → feedback → PostgreSQL
projection → CDC → ClickHouse metrics → progress API. Real engines everywhere; fewer clips than the demo."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from coach.services import ServiceSet, local_services
from runtime.clickhouse import get_clickhouse_client
from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import FEEDBACK, SUBMISSIONS, TRANSCRIPTS
from tests.audio_factory import JFK
from tests.event_reader import read_until
from tests.thread_servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def platform(migrated_stack: PlatformSettings) -> Iterator[dict[str, Any]]:
    """Every local service started in this process on free ports (the stack's env is already in os.environ)."""
    ports = {"ingestion": free_port(), "api": free_port()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COACH_INGESTION_PORT", str(ports["ingestion"]))
        patch.setenv("COACH_API_PORT", str(ports["api"]))
        patch.setenv("COACH_TRANSCRIPTION_WORKER_METRICS_PORT", "0")
        patch.setenv("COACH_FEEDBACK_METRICS_PORT", "0")
        services = ServiceSet(local_services())
        services.start()
        try:
            yield {
                "settings": migrated_stack,
                "services": services,
                "ingestion": f"http://127.0.0.1:{ports['ingestion']}",
                "api": f"http://127.0.0.1:{ports['api']}",
            }
        finally:
            alive = services.shutdown()
            assert alive == [], f"services did not stop: {alive}"
            assert services.failed() == [], [f"{s.name}: {s.error}" for s in services.failed()]


def _until(probe: Any, what: str, services: ServiceSet, timeout_s: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert not services.failed(), [f"{s.name}: {s.error}" for s in services.failed()]
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} not seen in {timeout_s} s")


def test_upload_reaches_every_store_and_the_api(platform: dict[str, Any]) -> None:
    settings: PlatformSettings = platform["settings"]
    services: ServiceSet = platform["services"]
    user = f"e2e-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO learners (user_id, display_name, timezone, cohort) VALUES (%s, 'E2E', 'Europe/Berlin', 'e2e')",
            (user,),
        )
        token = create_api_key(conn, user, "learner")
    auth = {"Authorization": f"Bearer {token}"}

    _until(
        lambda: httpx.get(f"{platform['ingestion']}/readyz", timeout=2).status_code == 200, "ingestion ready", services
    )
    with JFK.open("rb") as fh:
        response = httpx.post(
            f"{platform['ingestion']}/v1/submissions",
            files={"audio": ("jfk.flac", fh)},
            data={"prompt_id": "e2e"},
            headers=auth,
            timeout=60,
        )
    assert response.status_code == 202, response.text
    sid = response.json()["submission_id"]

    # events on every topic, keyed by the user
    for topic in (SUBMISSIONS.name, TRANSCRIPTS.name, FEEDBACK.name):
        events = read_until(topic, lambda seen: any(e.get("submission_id") == sid for e in seen), timeout_s=180)
        event = next(e for e in events if e.get("submission_id") == sid)
        assert event["user_id"] == user and event["_key"] == user
    # PostgreSQL projection with its status timeline
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:

        def projected() -> Any:
            return conn.execute("SELECT status FROM submissions WHERE submission_id = %s", (sid,)).fetchone()

        assert _until(lambda: (projected() or (None,))[0] == "feedback", "projection 'feedback'", services)
        statuses = [
            r[0]
            for r in conn.execute(
                "SELECT status FROM submission_timeline WHERE submission_id = %s ORDER BY at", (sid,)
            ).fetchall()
        ]
        assert statuses == ["received", "transcribed", "feedback"]
    # the projection's change events on the CDC topic
    cdc = read_until(
        "cdc.public.submissions",
        lambda seen: any(
            (e.get("after") or {}).get("submission_id") == sid and (e.get("after") or {}).get("status") == "feedback"
            for e in seen
        ),
        timeout_s=120,
    )
    assert any((e.get("after") or {}).get("submission_id") == sid for e in cdc)
    # ClickHouse metrics written by the dataflow
    client = get_clickhouse_client(settings)
    rows = _until(
        lambda: (
            client.query(
                "SELECT word_count, speech_rate_wpm, asr_model, metrics_version FROM submission_metrics FINAL "
                "WHERE submission_id = {s:UUID}",
                parameters={"s": sid},
            ).result_rows
        ),
        "submission_metrics row",
        services,
    )
    word_count, wpm, asr_model, version = rows[0]
    assert word_count >= 20 and 90 < wpm < 180 and asr_model.endswith("tiny.en") and version >= 1
    # the progress API answers with transcript, metrics and feedback; other learners cannot read it
    detail = _until(
        lambda: (lambda r: r.json() if r.status_code == 200 and r.json().get("metrics") else None)(
            httpx.get(f"{platform['api']}/v1/submissions/{sid}", headers=auth, timeout=10)
        ),
        "API detail",
        services,
    )
    assert detail["status"] == "feedback" and "ask not what your country" in detail["transcript"]["text"].lower()
    assert detail["metrics"]["word_count"] == word_count
    assert detail["feedback"]["provider"] == "rules" and detail["feedback"]["points"]
    listing = httpx.get(f"{platform['api']}/v1/users/{user}/submissions", headers=auth, timeout=10).json()
    assert [item["submission_id"] for item in listing["items"]] == [sid]
    progress = httpx.get(f"{platform['api']}/v1/users/{user}/progress", headers=auth, timeout=10)
    assert progress.status_code == 200 and progress.json()["user_id"] == user
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        other = create_api_key(conn, f"e2e-other-{uuid.uuid4().hex[:6]}", "learner")
    denied = httpx.get(f"{platform['api']}/v1/submissions/{sid}", headers={"Authorization": f"Bearer {other}"})
    assert denied.status_code in (403, 404)
    assert json.loads(denied.text)["error"]
