"""The write path on real speech through the real broker: ingestion API → Kafka → transcription workers.

Covers issue 3's must-show list: JFK clip WER, synthesized speech, bad input refused with the right 4xx,
worker-only failures dead-lettered while the partition keeps moving, idempotent retries.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jiwer
import psycopg
import pytest
from fastapi.testclient import TestClient

from ingestion.app import create_app
from ingestion.settings import IngestionSettings
from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import SUBMISSIONS_DLQ, TRANSCRIPTS
from tests.audio_factory import JFK, JFK_TEXT, reencode, silence
from tests.event_reader import read_until
from transcription.worker import TranscriptionWorker

pytestmark = pytest.mark.integration

ESPEAK_TEXT = "Learning a new language takes patience and practice every single day"


def normalised_wer(reference: str, hypothesis: str) -> float:
    """WER after lower-casing and removing punctuation (jiwer transforms)."""
    transform = jiwer.Compose(
        [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
         jiwer.ReduceToListOfListOfWords()]
    )  # fmt: skip
    return float(jiwer.wer(reference, hypothesis, reference_transform=transform, hypothesis_transform=transform))


@pytest.fixture(scope="module")
def token(migrated_stack: PlatformSettings) -> str:
    with psycopg.connect(migrated_stack.postgres_dsn, autocommit=True) as conn:
        return create_api_key(conn, f"learner-{uuid.uuid4().hex[:8]}", "learner")


@pytest.fixture(scope="module")
def client(migrated_stack: PlatformSettings) -> Iterator[TestClient]:
    app = create_app(migrated_stack, IngestionSettings(max_upload_bytes=2 * 1024 * 1024))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def worker(migrated_stack: PlatformSettings) -> Iterator[TranscriptionWorker]:
    stop = threading.Event()
    instance = TranscriptionWorker(migrated_stack)
    thread = threading.Thread(target=instance.run, args=(stop,), daemon=True)
    thread.start()
    yield instance
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive(), "worker did not stop after the stop event"


def upload(client: TestClient, token: str, path: Path, **headers: str) -> Any:
    with path.open("rb") as fh:
        return client.post(
            "/v1/submissions",
            files={"audio": (path.name, fh, "application/octet-stream")},
            data={"prompt_id": "p-1"},
            headers={"Authorization": f"Bearer {token}", **headers},
        )


def transcript_of(submission_id: str, timeout_s: float = 180) -> dict[str, Any]:
    events = read_until(
        TRANSCRIPTS.name, lambda seen: any(e.get("submission_id") == submission_id for e in seen), timeout_s=timeout_s
    )
    return next(e for e in events if e.get("submission_id") == submission_id)


def test_jfk_clip_is_transcribed_with_low_wer(client: TestClient, token: str, worker: TranscriptionWorker) -> None:
    response = upload(client, token, JFK)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "received"
    event = transcript_of(body["submission_id"])
    payload = event["payload"]
    wer = normalised_wer(JFK_TEXT, payload["text"])
    assert wer <= 0.10, f"WER {wer:.2%}: {payload['text']!r}"
    assert event["schema_version"] == 3
    words = payload["words"]  # v2 on: parallel arrays
    assert words["text"], "word timestamps missing"
    assert len(words["text"]) == len(words["start"]) == len(words["end"]) == len(words["probability"])
    for start, end in zip(words["start"], words["end"], strict=True):
        assert 0.0 <= start <= end <= payload["duration_s"] + 0.05
    assert payload["duration_s"] == pytest.approx(11.0, abs=0.1)
    assert event["causation_id"] is not None and event["producer"] == "transcription"
    assert event["_key"] == event["user_id"]
    timings = payload["timings"]
    assert set(timings) >= {"queue_wait_ms", "fetch_ms", "decode_ms", "vad_ms", "inference_ms", "batch_size"}
    assert timings["inference_ms"] > 0


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (bootstrap installs it)")
def test_synthesized_speech_is_transcribed(
    client: TestClient, token: str, worker: TranscriptionWorker, tmp_path: Path
) -> None:
    wav = tmp_path / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), ESPEAK_TEXT], check=True)
    response = upload(client, token, wav)
    assert response.status_code == 202, response.text
    payload = transcript_of(response.json()["submission_id"])["payload"]
    wer = normalised_wer(ESPEAK_TEXT, payload["text"])
    assert wer <= 0.25, f"WER {wer:.2%}: {payload['text']!r}"


def test_bad_input_gets_the_right_4xx(client: TestClient, token: str, tmp_path: Path) -> None:
    data = JFK.read_bytes()
    (tmp_path / "truncated.flac").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.wav").write_text("not audio at all\n" * 100)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "big.wav").write_bytes(b"RIFF" + b"\0" * (3 * 1024 * 1024))
    silence(tmp_path / "long.ogg", 20 * 60, codec="libopus", rate=48000)
    reencode(JFK, tmp_path / "jfk.aiff", codec="pcm_s16be")
    expected = {
        "truncated.flac": (422, "truncated"),
        "notes.wav": (415, "not_audio"),
        "empty.wav": (422, "empty"),
        "big.wav": (413, "too_large"),
        "long.ogg": (422, "too_long"),
        "jfk.aiff": (415, "unsupported_container"),
    }
    for name, (status, code) in expected.items():
        response = upload(client, token, tmp_path / name)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        body = response.json()
        assert body["error"] == code and body["reason"], f"{name}: {body}"
    metrics = client.get("/metrics/").text
    assert 'coach_ingestion_rejects_total{reason="too_long"}' in metrics


def test_authentication_is_required(client: TestClient) -> None:
    with JFK.open("rb") as fh:
        response = client.post("/v1/submissions", files={"audio": ("jfk.flac", fh)})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    with JFK.open("rb") as fh:
        response = client.post(
            "/v1/submissions", files={"audio": ("jfk.flac", fh)}, headers={"Authorization": "Bearer sc_nope"}
        )
    assert response.status_code == 401


def test_idempotency_key_returns_the_first_submission(client: TestClient, token: str) -> None:
    key = f"retry-{uuid.uuid4()}"
    first = upload(client, token, JFK, **{"Idempotency-Key": key})
    second = upload(client, token, JFK, **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.json()["submission_id"] == second.json()["submission_id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    other = upload(client, token, JFK, **{"Idempotency-Key": f"{key}-other"})
    assert other.json()["submission_id"] != first.json()["submission_id"]


def test_worker_only_failure_goes_to_dlq_and_partition_keeps_moving(
    client: TestClient, token: str, worker: TranscriptionWorker, tmp_path: Path
) -> None:
    quiet = silence(tmp_path / "quiet.wav", 3.0)  # valid container and duration: accepted, but no speech
    rejected = upload(client, token, quiet)
    assert rejected.status_code == 202, rejected.text
    after = upload(client, token, JFK)  # same user → same partition, after the poison one
    assert after.status_code == 202
    bad_id, good_id = rejected.json()["submission_id"], after.json()["submission_id"]
    dead = read_until(SUBMISSIONS_DLQ.name, lambda seen: any(d.get("submission_id") == bad_id for d in seen))
    record = next(d for d in dead if d.get("submission_id") == bad_id)
    assert record["error_class"] == "NoSpeech"
    assert "no speech" in record["reason"]
    assert record["consumer_group"] == "transcription"
    assert transcript_of(good_id)["payload"]["text"]


def test_readiness_and_metrics(client: TestClient) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"broker": "ok", "blob_store": "ok", "postgres": "ok"}
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "coach_ingestion_request_seconds" in client.get("/metrics/").text
