"""Cohorts: the cohorts a caller may read and a cohort's progress."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.access import Caller, ClickHouse, Postgres, ReadableCohort
from api.analytics import fetch_windows
from api.models import CohortLearner, CohortList, CohortPoint, CohortProgress, CohortSummary, WindowKind, WindowPoint
from api.progress import HEADLINE_METRICS, summarize
from api.readmodels import coach_cohorts, cohort_learners, list_cohorts
from api.responses import errors
from api.settings import ApiSettings
from api.time_range import FromQuery, ToQuery, in_range, resolve_range

__all__ = ["build"]


def build(settings: ApiSettings) -> APIRouter:
    """The cohorts routes (see :mod:`api.routers`)."""
    router = APIRouter(tags=["cohorts"])

    @router.get(
        "/v1/cohorts",
        response_model=CohortList,
        responses=errors(401, 403, 503),
        summary="Cohorts the caller may read (coaches: the cohorts they coach; admins: all)",
    )
    def get_cohorts(caller: Caller, pool: Postgres) -> CohortList:
        """Cohort names with their number of learners."""
        if caller.role == "learner":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "cohort views are for coaches and admins")
        with pool.connection() as conn:
            only = coach_cohorts(conn, caller.user_id) if caller.role == "coach" else None
            cohorts = list_cohorts(conn, only)
        return CohortList(items=[CohortSummary(cohort=c, learners=n) for c, n in cohorts])

    @router.get(
        "/v1/cohorts/{cohort}/progress",
        response_model=CohortProgress,
        responses=errors(401, 403, 404, 422, 503),
        summary="Every learner of a cohort with its change since the first weeks, and the cohort's mean series",
    )
    def get_cohort_progress(
        cohort: ReadableCohort,
        pool: Postgres,
        reader: ClickHouse,
        window: Annotated[WindowKind, Query(description="Window kind of the series")] = WindowKind.WEEKLY,
        start: FromQuery = None,
        end: ToQuery = None,
    ) -> CohortProgress:
        """Per learner: submissions in range, last window, changes; per window start: the mean over learners."""
        range_from, range_to = resolve_range(start, end, settings)
        with pool.connection() as conn:
            learners = cohort_learners(conn, cohort)
        windows = fetch_windows(
            reader, [lr.user_id for lr in learners], (window,), range_from, range_to, all_weekly=True
        )
        out: list[CohortLearner] = []
        by_start: dict[datetime, list[WindowPoint]] = {}
        for learner in learners:
            own = windows.get(learner.user_id, {})
            series = in_range(own.get(window, []), range_from, range_to)
            summary = summarize(own.get(WindowKind.WEEKLY, []), baseline_weeks=settings.baseline_weeks)
            out.append(
                CohortLearner(
                    user_id=learner.user_id,
                    display_name=learner.display_name,
                    coach_id=learner.coach_id,
                    submissions=sum(w.submissions for w in series),
                    last_window_start=series[-1].window_start if series else None,
                    changes=summary.changes,
                )
            )
            for w in series:
                by_start.setdefault(w.window_start, []).append(w)
        points = [
            CohortPoint(
                window_start=at,
                learners=len(group),
                submissions=sum(w.submissions for w in group),
                values={m.name: _mean([getattr(w, m.name) for w in group]) for m in HEADLINE_METRICS},
            )
            for at, group in sorted(by_start.items())
        ]
        return CohortProgress.model_validate(
            {"cohort": cohort, "window": window, "from": range_from, "to": range_to, "learners": out, "series": points}
        )

    return router


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None
