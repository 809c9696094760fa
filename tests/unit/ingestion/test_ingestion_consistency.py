"""Issue 16, item 3: ingestion is consistent.

* every field is validated before the blob is written, so a 4xx leaves no blob and no spool file behind;
* control characters in text fields (form fields, the file name, the Idempotency-Key) are 422;
* a full spool disk is 503 with Retry-After (not 422 ``bad_multipart``) and leaves no temporary file (a real
  1 MiB tmpfs when we are root, else ENOSPC raised by the write);
* an Idempotency-Key never points at a submission that was not produced (a crash between reserve and produce
  makes the retry produce it), and a late broker acknowledgement never creates a second submission (a 503 keeps
  the reservation; the retry re-produces the same event);
* a global upload rate limit sits beside the per-user one.

The first group needs no engines; the ``integration`` group runs the app on the real Kafka and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from ingestion.app import create_app
from ingestion.rejection import Rejected
from ingestion.settings import IngestionSettings
from ingestion.upload import receive_upload
from runtime.blobstore import LocalBlobStore
from runtime.kafka import DeliveryFailed
from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import SUBMISSIONS
from tests.audio_factory import JFK
from tests.event_reader import read_until

BOUNDARY = "----coach-test-boundary"


def multipart(fields: dict[str, str], audio: bytes, filename: str = "a.flac") -> bytes:
    """A multipart/form-data body: the text ``fields`` first, then the ``audio`` part."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + audio
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return b"".join(parts)


async def _chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _receive(body: bytes, spool: Path, max_bytes: int = 8 * 2**20) -> Any:
    return asyncio.run(
        receive_upload(
            f"multipart/form-data; boundary={BOUNDARY}",
            str(len(body)),
            _chunks(body),
            max_bytes=max_bytes,
            spool_dir=spool,
        )
    )


@pytest.fixture
def tiny_spool(tmp_path: Path) -> Iterator[Path]:
    """A spool directory on a 1 MiB tmpfs (root only); else a plain directory (the test then injects ENOSPC)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool)], check=False).returncode == 0
    )
    try:
        yield spool
    finally:
        if mounted:
            subprocess.run(["umount", str(spool)], check=True)


@pytest.mark.unit
def test_full_spool_disk_is_503_with_retry_after_and_no_temp_file(
    tiny_spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.path.ismount(tiny_spool):  # not root: fail the spool writes the way a full disk does
        import tempfile

        real = tempfile.NamedTemporaryFile

        def full_disk(*args: Any, **kwargs: Any) -> Any:
            sink = real(*args, **kwargs)

            def write(_: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

            sink.write = write
            return sink

        monkeypatch.setattr("ingestion.upload.tempfile.NamedTemporaryFile", full_disk)
    body = multipart({"prompt_id": "p1"}, os.urandom(3 * 2**20))
    with pytest.raises(Rejected) as refused:
        _receive(body, tiny_spool)
    assert refused.value.status == 503, (refused.value.code, refused.value.reason)
    assert refused.value.code == "storage_full"
    assert int(refused.value.headers["Retry-After"]) > 0
    assert list(tiny_spool.iterdir()) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "filename"),
    [
        ({"prompt_id": "p\x00one"}, "a.flac"),
        ({"prompt_id": "p\x1b[31mred"}, "a.flac"),
        ({"recorded_at": "2026-11-20T10:00:00+00:00\x7f"}, "a.flac"),
        ({"prompt_id": "ok"}, "a\x01.flac"),
    ],
    ids=["nul", "escape", "del", "filename"],
)
def test_control_characters_in_text_fields_are_422_and_leave_no_file(
    tmp_path: Path, fields: dict[str, str], filename: str
) -> None:
    spool = tmp_path / "spool"
    with pytest.raises(Rejected) as refused:
        _receive(multipart(fields, b"\0" * 200_000, filename), spool)
    assert (refused.value.status, refused.value.code) == (422, "invalid")
    assert "control characters" in refused.value.reason
    assert list(spool.iterdir()) == []


@pytest.mark.unit
def test_global_rate_limit_sits_beside_the_per_user_one() -> None:
    from ingestion.rate_limit import UploadLimiter

    now = [0.0]
    limiter = UploadLimiter(60, 5, 60, 3, timer=lambda: now[0])
    assert [limiter.acquire(f"user-{i}") for i in range(3)] == [None, None, None]
    scope, wait = limiter.acquire("user-3") or ("", 0.0)
    assert scope == "global" and 0 < wait <= 1.0
    now[0] += 1.0  # one global token back
    assert limiter.acquire("user-3") is None
    # the per-user limit still applies on its own: user-0 refused by its own bucket, no global token spent
    single = UploadLimiter(60, 1, 6000, 100, timer=lambda: now[0])
    assert single.acquire("u") is None
    assert (single.acquire("u") or ("",))[0] == "user"


# --- through the app, on the real engines ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens(migrated_stack: PlatformSettings) -> list[str]:
    with psycopg.connect(migrated_stack.postgres_dsn, autocommit=True) as conn:
        return [create_api_key(conn, f"consistency-{uuid.uuid4().hex[:8]}", "learner") for _ in range(2)]


@pytest.fixture(scope="module")
def blob_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("blobs")


@pytest.fixture(scope="module")
def app_client(migrated_stack: PlatformSettings, blob_root: Path) -> Iterator[TestClient]:
    app = create_app(migrated_stack, IngestionSettings(max_upload_bytes=4 * 2**20), LocalBlobStore(blob_root))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def post(client: TestClient, token: str, fields: dict[str, str] | None = None, **headers: str) -> Any:
    with JFK.open("rb") as fh:
        return client.post(
            "/v1/submissions",
            files={"audio": ("jfk.flac", fh, "application/octet-stream")},
            data=fields if fields is not None else {"prompt_id": "p-1"},
            headers={"Authorization": f"Bearer {token}", **headers},
        )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fields", "headers"),
    [
        ({"recorded_at": "yesterday"}, {}),
        ({"recorded_at": "2020-01-01T00:00:00"}, {}),
        ({"prompt_id": "p" * 129}, {}),
        ({"prompt_id": "tab\there"}, {}),
        ({"prompt_id": "p-1"}, {"Idempotency-Key": "key\x7fwith-del"}),
    ],
    ids=["recorded_at", "naive-recorded_at", "long-prompt", "control-prompt", "control-key"],
)
def test_a_4xx_leaves_no_blob_and_no_spool_file(
    app_client: TestClient,
    tokens: list[str],
    blob_root: Path,
    migrated_stack: PlatformSettings,
    fields: dict[str, str],
    headers: dict[str, str],
) -> None:
    spool = migrated_stack.home_dir / "spool"
    blobs_before, spool_before = _files(blob_root), _files(spool)
    response = post(app_client, tokens[0], fields, **headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid"
    assert _files(blob_root) == blobs_before, "a refused upload left a blob behind"
    assert _files(spool) - spool_before == set(), "a refused upload left a spool file behind"


def _events_with_key(key: str, settings: PlatformSettings, at_least: int) -> list[dict[str, Any]]:
    return [
        e
        for e in read_until(
            SUBMISSIONS.name,
            lambda seen: sum(1 for e in seen if (e.get("payload") or {}).get("idempotency_key") == key) >= at_least,
            timeout_s=30,
            settings=settings,
        )
        if (e.get("payload") or {}).get("idempotency_key") == key
    ]


@pytest.mark.integration
def test_crash_between_reserve_and_produce_makes_the_retry_produce_the_event(
    app_client: TestClient, tokens: list[str], migrated_stack: PlatformSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = app_client.app.state.producer  # type: ignore[attr-defined]
    real_send = producer.send

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the process died between reserve and produce")

    key = f"crash-{uuid.uuid4()}"
    monkeypatch.setattr(producer, "send", crash)
    assert post(app_client, tokens[0], **{"Idempotency-Key": key}).status_code == 500
    monkeypatch.setattr(producer, "send", real_send)
    retry = post(app_client, tokens[0], **{"Idempotency-Key": key})
    assert retry.status_code == 202, retry.text
    submission_id = retry.json()["submission_id"]
    events = _events_with_key(key, migrated_stack, 1)
    assert {e["submission_id"] for e in events} == {submission_id}, "the key points at a submission never produced"
    again = post(app_client, tokens[0], **{"Idempotency-Key": key})
    assert again.json()["submission_id"] == submission_id and again.headers.get("Idempotent-Replayed") == "true"


@pytest.mark.integration
def test_a_late_acknowledgement_never_makes_a_second_submission(
    app_client: TestClient, tokens: list[str], migrated_stack: PlatformSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker-loss drill's case: the upload is answered 503, but the event was written after all; the client's
    retry with the same key must reuse the same submission and event, not make a second one."""
    producer = app_client.app.state.producer  # type: ignore[attr-defined]
    real_send = producer.send

    def written_but_not_acknowledged(topic: str, event: Any, **kwargs: Any) -> Any:
        real_send(topic, event, **kwargs)
        raise DeliveryFailed(topic, "no acknowledgement within 15 s")

    key = f"late-ack-{uuid.uuid4()}"
    monkeypatch.setattr(producer, "send", written_but_not_acknowledged)
    first = post(app_client, tokens[0], **{"Idempotency-Key": key})
    assert first.status_code == 503 and int(first.headers["Retry-After"]) > 0, first.text
    monkeypatch.setattr(producer, "send", real_send)
    retry = post(app_client, tokens[0], **{"Idempotency-Key": key})
    assert retry.status_code == 202, retry.text
    events = _events_with_key(key, migrated_stack, 2)
    assert {e["submission_id"] for e in events} == {retry.json()["submission_id"]}, "a second submission was made"
    assert len({e["event_id"] for e in events}) == 1, "the retry produced a different event"


@pytest.mark.integration
def test_global_upload_rate_is_enforced_across_users(migrated_stack: PlatformSettings, tokens: list[str]) -> None:
    settings = IngestionSettings(global_rate_limit_burst=1, global_rate_limit_per_minute=1, rate_limit_burst=10)
    with TestClient(create_app(migrated_stack, settings)) as client:
        headers = [{"Authorization": f"Bearer {token}", "Content-Type": "text/plain"} for token in tokens]
        assert client.post("/v1/submissions", content=b"x", headers=headers[0]).status_code == 415
        refused = client.post("/v1/submissions", content=b"x", headers=headers[1])
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "rate_limited_global" and int(refused.headers["Retry-After"]) > 0
