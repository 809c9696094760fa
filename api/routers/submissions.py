"""Submissions: one submission, and a learner's submissions (cursor pagination)."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.access import Caller, ClickHouse, Postgres, ReadableUser, can_read_user
from api.analytics import fetch_headlines, fetch_submission_metrics
from api.models import SubmissionDetail, SubmissionPage, SubmissionSummary
from api.readmodels import (
    Cursor,
    InvalidCursor,
    fetch_feedback,
    fetch_submission,
    fetch_timeline,
    fetch_transcript,
    list_submissions,
)
from api.responses import errors
from api.settings import ApiSettings

__all__ = ["build"]


def build(settings: ApiSettings) -> APIRouter:
    """The submissions routes (see :mod:`api.routers`)."""
    router = APIRouter(tags=["submissions"])

    @router.get(
        "/v1/submissions/{submission_id}",
        response_model=SubmissionDetail,
        responses=errors(401, 404, 422, 503),
        summary="One submission: status timeline, transcript, metrics, feedback",
    )
    def get_submission(
        submission_id: Annotated[uuid.UUID, Path(description="The id returned by POST /v1/submissions")],
        caller: Caller,
        pool: Postgres,
        reader: ClickHouse,
        include_words: Annotated[bool, Query(description="Include the transcript's word timestamps")] = False,
    ) -> SubmissionDetail:
        """Everything known about a submission the caller may read (404 otherwise)."""
        with pool.connection() as conn:
            row = fetch_submission(conn, submission_id)
        if row is None or not can_read_user(pool, caller, row["user_id"]):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"submission {submission_id} not found")
        with pool.connection() as conn:
            timeline = fetch_timeline(conn, submission_id)
            transcript = fetch_transcript(conn, submission_id, words=include_words)
            feedback = fetch_feedback(conn, submission_id)
        metrics = fetch_submission_metrics(reader, row["user_id"], submission_id)
        return SubmissionDetail(**row, timeline=timeline, transcript=transcript, metrics=metrics, feedback=feedback)

    @router.get(
        "/v1/users/{user_id}/submissions",
        response_model=SubmissionPage,
        responses=errors(401, 404, 422, 503),
        summary="A learner's submissions, newest first (cursor pagination)",
    )
    def get_submissions(
        user_id: ReadableUser,
        pool: Postgres,
        reader: ClickHouse,
        limit: Annotated[int | None, Query(ge=1, le=settings.max_page_size, description="Page size")] = None,
        cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
        status_filter: Annotated[
            Literal["received", "transcribed", "feedback", "failed"] | None,
            Query(alias="status", description="Only submissions in this status"),
        ] = None,
    ) -> SubmissionPage:
        """A page of the learner's submissions with headline metrics where computed."""
        try:
            after = Cursor.decode(cursor) if cursor else None
        except InvalidCursor as exc:
            raise HTTPException(422, str(exc)) from exc
        with pool.connection() as conn:
            rows, next_cursor = list_submissions(
                conn, user_id, limit=limit or settings.page_size, after=after, status=status_filter
            )
        headlines = fetch_headlines(reader, user_id, [r["submission_id"] for r in rows])
        items = [SubmissionSummary(**r, **headlines.get(str(r["submission_id"]), {})) for r in rows]
        return SubmissionPage(items=items, next_cursor=next_cursor.encode() if next_cursor else None)

    return router
