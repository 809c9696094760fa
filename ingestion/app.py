"""The ingestion API (FastAPI): ``POST /v1/submissions``, ``/healthz``, ``/readyz``, ``/metrics``.

Flow of an upload: authenticate (bearer token → user) → rate limit (per user, and global) →
Idempotency-Key check (a known key completes its reservation, :mod:`ingestion.idempotency`) → stream the
body to a temp file with a size cap → validate every field (``recorded_at``, ``prompt_id``, control
characters) → probe the container and header duration (PyAV, with a timeout) → store the audio in the
blob store (content-addressed) → reserve the key with the event → produce ``SubmissionReceived`` with the
idempotent producer → confirm the key; answer 202 only after the broker acknowledged it.

Every 4xx is decided before the blob is written, and the spool file is deleted on every path, so a refused
upload leaves nothing behind. A full disk (spool or blob store) is 503 with ``Retry-After``, not a 4xx. A
503 after a reservation keeps it: the client's retry with the same key produces the same event (same
``event_id`` and ``submission_id``), so a late acknowledgement of the first attempt never makes a second
submission.
"""

from __future__ import annotations

import asyncio
import errno
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel, Field

from ingestion import idempotency
from ingestion.probe import probe_audio, probe_timeout
from ingestion.rate_limit import UploadLimiter
from ingestion.rejection import Rejected
from ingestion.settings import IngestionSettings
from ingestion.telemetry import REJECTS, REQUEST_LATENCY, UPLOAD_BYTES, UPLOADS
from ingestion.upload import SPOOL_RETRY_AFTER_S, receive_upload
from runtime.blobstore import BlobStore, open_blob_store
from runtime.http_auth import CurrentPrincipal
from runtime.http_errors import ErrorBody, error_response, install_error_handlers
from runtime.http_latency import install_latency_histogram
from runtime.kafka import DeliveryFailed, EventProducer
from runtime.readiness import postgres_probe, readiness_response
from runtime.settings import PlatformSettings
from schemas import SUBMISSIONS, BlobRef, SubmissionReceived, SubmissionReceivedPayload, new_event_id

__all__ = ["create_app", "SubmissionAccepted"]

PRODUCER_NAME = "ingestion"

#: How long one upload waits for the broker's acknowledgement (librdkafka ``message.timeout.ms`` of the ingestion
#: producer, seconds): long enough to ride over the failover of one broker of a cluster (fencing after 6 s in
#: ``coach stack up --brokers 3``), short enough that a client gets 503 in seconds when the cluster cannot take
#: writes (e.g. fewer in-sync replicas than ``min.insync.replicas``) instead of a hanging request.
SEND_TIMEOUT_S = 10.0
#: ``Retry-After`` (seconds) of a 503 answered when the broker did not acknowledge the event.
UNAVAILABLE_RETRY_AFTER_S = 5
#: Seconds past ``probe_timeout_s`` after which the request stops waiting for a probe that did not stop itself.
PROBE_BACKSTOP_S = 2.0
_KEY = re.compile(r"[\x20-\x7e]{1,256}")
_T = TypeVar("_T")


class SubmissionAccepted(BaseModel):
    """The 202 answer: the submission id to poll on the progress API."""

    submission_id: uuid.UUID
    status: str = Field(default="received", examples=["received"])


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "Missing or invalid bearer token",
        413: "Body larger than COACH_INGESTION_MAX_UPLOAD_BYTES",
        415: "Not audio, or a container outside the allow-list",
        408: "Request headers or body not received in time",
        422: "Empty, truncated, corrupt, too short or too long audio; missing 'audio' field; invalid recorded_at, "
        "prompt_id or Idempotency-Key; control characters in a text field",
        429: "Per-user or global upload rate limit, or too many failed token lookups from this address; see "
        "Retry-After",
        503: "Broker did not acknowledge the event within SEND_TIMEOUT_S, the disk is full, PostgreSQL is "
        "unavailable, or too many requests in flight; retry after Retry-After seconds (with the same "
        "Idempotency-Key)",
    }.items()
}

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": {"type": "string", "format": "binary", "description": "The recording"},
                        "prompt_id": {"type": "string", "maxLength": 128},
                        "recorded_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the answer was recorded (ISO 8601 with offset); default now",
                        },
                    },
                }
            }
        },
    }
}


def create_app(
    platform: PlatformSettings | None = None,
    settings: IngestionSettings | None = None,
    blob_store: BlobStore | None = None,
) -> FastAPI:
    """Build the ingestion app. Connections (PostgreSQL pool, producer) open in the lifespan."""
    platform = platform or PlatformSettings()
    settings = settings or IngestionSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pg_pool = ConnectionPool(
            platform.postgres_dsn, min_size=1, max_size=8, kwargs={"autocommit": True}, open=True
        )
        app.state.producer = EventProducer(
            platform, client_id="ingestion", **{"message.timeout.ms": int(SEND_TIMEOUT_S * 1000)}
        )
        app.state.blobs = blob_store or open_blob_store(platform)
        app.state.limiter = UploadLimiter(
            settings.rate_limit_per_minute,
            settings.rate_limit_burst,
            settings.global_rate_limit_per_minute,
            settings.global_rate_limit_burst,
        )
        try:
            yield
        finally:
            app.state.producer.flush(10)
            app.state.pg_pool.close()
            del app.state.producer  # the last reference: librdkafka's handle is destroyed with it

    app = FastAPI(
        title="Speech Coach ingestion API",
        version="1",
        lifespan=lifespan,
        description="Upload learners' recordings. Every accepted upload becomes a SubmissionReceived event.",
    )
    app.state.http_limits = settings.http_limits()  # what runtime.http_server builds the server with
    install_error_handlers(app)
    app.mount("/metrics", make_asgi_app())

    install_latency_histogram(app, REQUEST_LATENCY)

    @app.post(
        "/v1/submissions",
        status_code=202,
        response_model=SubmissionAccepted,
        responses=_ERRORS,
        openapi_extra=_UPLOAD_BODY,
        summary="Upload a recording",
    )
    async def create_submission(
        request: Request,
        principal: CurrentPrincipal,
        idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
    ) -> Any:
        """Accept a recording (multipart field ``audio``, optional ``prompt_id``) for ``principal``."""
        try:
            return await _accept(request, principal.user_id, idempotency_key, settings, platform)
        except Rejected as rej:
            REJECTS.labels(rej.code).inc()
            return error_response(rej.status, rej.code, rej.reason, rej.headers)

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: broker, blob store, PostgreSQL", responses={503: {"model": ErrorBody}})
    def readyz(request: Request) -> Any:
        """200 when the broker answers metadata, the blob store is writable and PostgreSQL answers."""
        return readiness_response(
            {
                "broker": lambda: request.app.state.producer._producer.list_topics(timeout=2),
                "blob_store": request.app.state.blobs.check,
                "postgres": postgres_probe(request.app.state.pg_pool),
            }
        )

    return app


async def _accept(
    request: Request,
    user_id: str,
    idempotency_key: str | None,
    settings: IngestionSettings,
    platform: PlatformSettings,
) -> JSONResponse:
    """Rate limit → Idempotency-Key (a known key: complete its reservation, no body read) → spool and validate
    every field → probe → blob → reserve the key with the event → produce → confirm. Everything that can refuse
    with a 4xx runs before the blob is written; the spool file is deleted on every path."""
    state = request.app.state
    refused = state.limiter.acquire(user_id)
    if refused is not None:
        scope, wait = refused
        what = "upload rate limit" if scope == "user" else "upload rate limit of the service"
        raise Rejected(
            429,
            "rate_limited" if scope == "user" else "rate_limited_global",
            f"{what} reached; retry in {wait:.1f} s",
            {"Retry-After": str(int(wait) + 1)},
        )
    key = _idempotency_key(idempotency_key)
    if key is not None:
        owner = await _store(idempotency.find, state.pg_pool, user_id, key)
        if owner is not None:
            return await _complete(state, user_id, key, owner, replayed=True)

    upload = await receive_upload(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        max_bytes=settings.max_upload_bytes,
        spool_dir=platform.home_dir / "spool",
    )
    try:
        recorded_at = _recorded_at(upload.fields.get("recorded_at"), settings)
        prompt_id = upload.fields.get("prompt_id") or None
        if prompt_id is not None and len(prompt_id) > 128:
            raise Rejected(422, "invalid", "prompt_id is longer than 128 characters")
        try:
            # The probe stops itself at its deadline (checked per packet and inside FFmpeg's reads, 422
            # probe_timeout); the outer wait is only a backstop for a read FFmpeg does not interrupt.
            probe = await asyncio.wait_for(
                asyncio.to_thread(
                    probe_audio,
                    upload.path,  # type: ignore[arg-type]
                    min_duration_s=settings.min_duration_s,
                    max_duration_s=settings.max_duration_s,
                    timeout_s=settings.probe_timeout_s,
                ),
                timeout=settings.probe_timeout_s + PROBE_BACKSTOP_S,
            )
        except TimeoutError as exc:
            raise probe_timeout(settings.probe_timeout_s) from exc
        try:
            uri = await asyncio.to_thread(state.blobs.put_file, upload.path, upload.sha256)
        except OSError as exc:  # the blob store's disk or mount, not the client's upload
            raise Rejected(
                503,
                "storage_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "storage_unavailable",
                f"the audio could not be stored ({exc.strerror or exc}); retry later",
                {"Retry-After": str(SPOOL_RETRY_AFTER_S)},
            ) from exc
    finally:
        upload.discard()

    event_id = new_event_id()
    event = SubmissionReceived(
        event_id=event_id,
        correlation_id=event_id,
        user_id=user_id,
        submission_id=new_event_id(),
        producer=PRODUCER_NAME,
        payload=SubmissionReceivedPayload(
            blob=BlobRef(uri=uri, sha256=upload.sha256, size_bytes=upload.size, content_type=probe.content_type),
            container=probe.container,
            codec=probe.codec,
            duration_s=probe.duration_s,
            sample_rate=probe.sample_rate,
            channels=probe.channels,
            prompt_id=prompt_id,
            recorded_at=recorded_at,
            filename=(upload.filename or None) and upload.filename[:512],
            idempotency_key=key,
        ),
    )
    if key is not None:
        owner = await _store(idempotency.reserve, state.pg_pool, user_id, key, event)
        mine = owner.submission_id == event.submission_id
        response = await _complete(state, user_id, key, owner, replayed=not mine)
    else:
        await _produce(state, event)
        response = _accepted(event.submission_id, replayed=False)
    UPLOADS.inc()
    UPLOAD_BYTES.inc(upload.size)
    return response


async def _complete(
    state: Any, user_id: str, key: str, owner: idempotency.Reservation, *, replayed: bool
) -> JSONResponse:
    """Answer for the submission that owns ``key``: produce its stored event first unless the broker confirmed it
    already (a 503 before, a crash between reserve and produce), then mark it confirmed."""
    if not owner.confirmed:
        assert owner.event is not None  # rows without an event are confirmed
        await _produce(state, owner.event)
        await _store(idempotency.confirm, state.pg_pool, user_id, key, owner.submission_id)
    return _accepted(owner.submission_id, replayed=replayed)


async def _produce(state: Any, event: SubmissionReceived) -> None:
    """Produce ``event`` and wait for the acknowledgement; 503 with ``Retry-After`` when none comes. A reservation
    is kept on failure: the retry produces the same event (the first attempt may still land on the topic)."""
    try:
        # The delivery report (success or librdkafka's message timeout) arrives within SEND_TIMEOUT_S; the extra
        # seconds keep send's own flush deadline from firing first and leaving the message queued behind a 503.
        await asyncio.to_thread(state.producer.send, SUBMISSIONS.name, event, timeout_s=SEND_TIMEOUT_S + 5)
    except DeliveryFailed as exc:
        raise Rejected(
            503,
            "unavailable",
            f"the event could not be stored; retry later with the same Idempotency-Key ({exc})",
            {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        ) from exc


async def _store(fn: Callable[..., _T], *args: Any) -> _T:
    """Run an idempotency-store call in a thread; PostgreSQL being unreachable is a 503, not a 500."""
    try:
        return await asyncio.to_thread(fn, *args)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise Rejected(
            503,
            "unavailable",
            f"PostgreSQL is unavailable ({type(exc).__name__}); retry later",
            {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        ) from exc


def _idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: None when absent; 1-256 visible ASCII characters or spaces, else 422."""
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise Rejected(
            422, "invalid", "Idempotency-Key must be 1-256 printable ASCII characters (no control characters)"
        )
    return value


def _recorded_at(value: str | None, settings: IngestionSettings) -> datetime | None:
    """Parse the optional ``recorded_at`` field: tz-aware ISO 8601, not in the future, not too old."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Rejected(422, "invalid", f"recorded_at is not an ISO 8601 datetime: {value!r}") from exc
    if parsed.tzinfo is None:
        raise Rejected(422, "invalid", "recorded_at needs a UTC offset, e.g. 2026-11-21T10:00:00+00:00")
    now = datetime.now(UTC)
    if parsed > now + timedelta(minutes=5):
        raise Rejected(422, "invalid", "recorded_at is in the future")
    if parsed < now - timedelta(days=settings.max_recorded_age_days):
        raise Rejected(422, "invalid", f"recorded_at is older than {settings.max_recorded_age_days} days")
    return parsed.astimezone(UTC)


def _accepted(submission_id: uuid.UUID, *, replayed: bool) -> JSONResponse:
    body = SubmissionAccepted(submission_id=submission_id).model_dump(mode="json")
    headers = {"Location": f"/v1/submissions/{submission_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202, headers=headers)
