"""The progress API's pure parts: the change summary, request ranges, pagination cursors, charts and the page,
its settings, and the completeness of its OpenAPI document (built offline: ``create_app()`` opens nothing)."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi import HTTPException

from api.app import create_app, tune_garbage_collector
from api.charts import CHARTS, render_chart_svg
from api.models import WindowPoint
from api.page import render_progress_page
from api.progress import HEADLINE_METRICS, summarize
from api.readmodels import Cursor, InvalidCursor
from api.settings import ApiSettings
from api.time_range import EARLIEST, resolve_range

pytestmark = pytest.mark.unit

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)


def week(i: int, *, speech: float | None, pauses: float | None, submissions: int = 2, mattr: float = 0.6,
         sufficient: bool = True) -> WindowPoint:  # fmt: skip
    start = MONDAY + timedelta(weeks=i)
    return WindowPoint(
        window_start=start,
        window_end=start + timedelta(weeks=1),
        local_start_date=start.date(),
        timezone="UTC",
        submissions=submissions,
        word_count=200,
        total_duration_s=120.0,
        phonation_time_s=90.0,
        speech_rate_wpm=speech,
        articulation_rate_wpm=None if speech is None else speech * 1.3,
        silent_pauses_per_minute=pauses,
        mean_silent_pause_s=0.8,
        mean_length_of_run=4.0,
        filled_pauses_per_100_words=5.0,
        repetitions_per_100_words=1.0,
        distinct_words=80,
        vocabulary_token_count=180,
        mattr=mattr,
        mtld=50.0,
        vocabulary_sufficient=sufficient,
        metrics_version=1,
    )


def changes(summary: object) -> dict[str, object]:
    return {c.metric: c for c in summary.changes}  # type: ignore[attr-defined]


def test_summary_compares_first_and_last_weeks_weighted_by_submissions() -> None:
    weeks = [
        week(0, speech=100, pauses=12, submissions=1),
        week(1, speech=110, pauses=12, submissions=3),
        week(2, speech=999, pauses=99),  # neither in the baseline nor in the recent period
        week(3, speech=120, pauses=9),
        week(4, speech=130, pauses=7),
    ]
    summary = summarize(list(reversed(weeks)), baseline_weeks=2)
    assert summary.baseline is not None and summary.recent is not None
    assert summary.baseline.weeks == 2 and summary.baseline.submissions == 4
    assert summary.baseline.values["speech_rate_wpm"] == pytest.approx((100 + 3 * 110) / 4)
    assert summary.recent.start == MONDAY + timedelta(weeks=3) and summary.recent.values["speech_rate_wpm"] == 125
    c = changes(summary)
    assert c["speech_rate_wpm"].direction == "improved" and c["speech_rate_wpm"].change == pytest.approx(17.5)
    assert c["silent_pauses_per_minute"].direction == "improved" and c["silent_pauses_per_minute"].change == -4
    assert c["mean_silent_pause_s"].direction == "unchanged"
    assert [m.name for m in HEADLINE_METRICS] == [x.metric for x in summary.changes]


def test_summary_declines_unknowns_and_short_histories() -> None:
    c = changes(summarize([week(0, speech=120, pauses=6), week(1, speech=100, pauses=9)], baseline_weeks=2))
    assert c["speech_rate_wpm"].direction == "declined" and c["silent_pauses_per_minute"].direction == "declined"
    three = summarize([week(i, speech=100 + i, pauses=5) for i in range(3)], baseline_weeks=2)
    assert three.baseline.weeks == 1 and three.recent.weeks == 1  # type: ignore[union-attr]
    single = summarize([week(0, speech=100, pauses=5)], baseline_weeks=2)
    assert single.baseline is not None and single.recent is None
    assert all(x.direction == "unknown" for x in single.changes)
    empty = summarize([], baseline_weeks=2)
    assert empty.baseline is None and all(x.change is None for x in empty.changes)
    no_speech = changes(summarize([week(0, speech=None, pauses=5), week(1, speech=None, pauses=5)], baseline_weeks=1))
    assert no_speech["speech_rate_wpm"].direction == "unknown"


def test_summary_ignores_vocabulary_of_insufficient_windows() -> None:
    weeks = [week(0, speech=100, pauses=5, mattr=0.1, sufficient=False), week(1, speech=100, pauses=5, mattr=0.7)]
    summary = summarize(weeks, baseline_weeks=1)
    assert summary.baseline.values["mattr"] is None and summary.recent.values["mattr"] == 0.7  # type: ignore[union-attr]
    assert changes(summary)["mattr"].direction == "unknown"


def test_resolve_range() -> None:
    settings = ApiSettings(default_range_days=10, max_range_days=30)
    start, end = resolve_range(None, datetime(2024, 5, 1, 12), settings)  # noqa: DTZ001 - naive means UTC
    assert end == datetime(2024, 5, 1, 12, tzinfo=UTC) and start == end - timedelta(days=10)
    start, _ = resolve_range(None, datetime(1970, 1, 3, tzinfo=UTC), settings)
    assert start == EARLIEST
    aware = datetime(2024, 5, 1, 14, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert resolve_range(None, aware, settings)[1].tzinfo == UTC
    for bad in [
        (datetime(2024, 5, 2, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC)),
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC)),
        (datetime(1, 1, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC)),
        (None, datetime(9999, 1, 1, tzinfo=UTC)),
    ]:
        with pytest.raises(HTTPException) as err:
            resolve_range(*bad, settings)
        assert err.value.status_code == 422


def test_cursor_round_trip_and_rejects_foreign_tokens() -> None:
    cursor = Cursor(datetime(2024, 3, 1, 8, 30, 0, 123456, tzinfo=UTC), uuid.uuid4())
    assert Cursor.decode(cursor.encode()) == cursor
    assert "=" not in cursor.encode()
    for token in ["x", "", "eyJhIjoxfQ", cursor.encode()[:-3], "%%%", "bnVsbA"]:
        with pytest.raises(InvalidCursor):
            Cursor.decode(token)


def test_chart_svg_and_page() -> None:
    weeks = [week(i, speech=100 + 5 * i, pauses=10 - i) for i in range(5)]
    svg = render_chart_svg(CHARTS[0], weeks)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "speech rate" in svg and "articulation rate" in svg  # text, not glyph paths
    assert render_chart_svg(CHARTS[0], weeks) == svg  # deterministic
    page = render_progress_page("u<1>", "weekly", weeks, summarize(weeks, baseline_weeks=2), token_in_query="sc_t")
    assert page.count('<figure class="chart"') == len(CHARTS) and "u&lt;1&gt;" in page
    assert 'href="?window=daily&amp;token=sc_t"' in page and 'id="summary"' in page
    empty = render_progress_page("u1", "daily", [], summarize([], baseline_weeks=2))
    assert 'id="no-data"' in empty and "<svg" not in empty and 'id="summary"' not in empty


def test_settings_are_frozen_with_the_api_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ApiSettings().port == 8001
    monkeypatch.setenv("COACH_API_PORT", "9001")
    monkeypatch.setenv("COACH_API_CLICKHOUSE_READONLY", "2")
    settings = ApiSettings()
    assert settings.port == 9001 and settings.clickhouse_readonly == 2
    with pytest.raises(Exception, match="frozen"):
        settings.port = 1  # type: ignore[misc]
    for name, field in ApiSettings.model_fields.items():
        assert field.description, name


def test_openapi_documents_models_errors_and_security() -> None:
    spec = create_app().openapi()
    schemas = spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    expected = {
        "/v1/submissions/{submission_id}": ("SubmissionDetail", {"401", "404", "422", "503"}),
        "/v1/users/{user_id}/progress": ("ProgressResponse", {"401", "404", "422", "503"}),
        "/v1/users/{user_id}/submissions": ("SubmissionPage", {"401", "404", "422", "503"}),
        "/v1/cohorts": ("CohortList", {"401", "403", "503"}),
        "/v1/cohorts/{cohort}/progress": ("CohortProgress", {"401", "403", "404", "422", "503"}),
    }
    for path, (model, errors) in expected.items():
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [{"HTTPBearer": []}], path
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}, path
        assert errors <= set(operation["responses"]), path
        for code in errors:
            body = operation["responses"][code]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorBody"}, (path, code)
    page = spec["paths"]["/progress/{user_id}"]["get"]
    assert "text/html" in page["responses"]["200"]["content"]
    assert "token" in {p["name"] for p in page["parameters"]}
    assert page["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(schemas)  # 422s are ErrorBody
    progress = spec["paths"]["/v1/users/{user_id}/progress"]["get"]
    assert {p["name"] for p in progress["parameters"]} == {"user_id", "window", "from", "to"}
    assert set(schemas["ProgressResponse"]["required"]) == {"user_id", "from", "to", "series", "summary"}
    assert {"/healthz", "/readyz"} <= set(spec["paths"])


def test_window_point_dates_are_dates() -> None:
    assert isinstance(week(0, speech=1, pauses=1).local_start_date, date)


def test_speech_rate_progress_means_moving_toward_the_comfortable_band() -> None:
    """A learner far above the feedback's 130–175 wpm band who slows down improved; one leaving the band declined;
    staying inside it is unchanged (the same band as the pace rule's, so summary and feedback agree)."""
    from api.progress import PACE_RANGE_WPM, distance_to

    assert PACE_RANGE_WPM == (130.0, 175.0)
    assert distance_to(236, PACE_RANGE_WPM) == 61 and distance_to(150, PACE_RANGE_WPM) == 0
    assert distance_to(100, PACE_RANGE_WPM) == 30

    def speech(before: float, after: float) -> object:
        c = changes(summarize([week(0, speech=before, pauses=5), week(1, speech=after, pauses=5)], baseline_weeks=1))
        return c["speech_rate_wpm"]

    slowed = speech(236, 210)
    assert slowed.direction == "improved" and slowed.change == -26  # type: ignore[attr-defined]
    assert slowed.better == "toward_range" and slowed.target == [130.0, 175.0]  # type: ignore[attr-defined]
    assert speech(160, 230).direction == "declined"  # type: ignore[attr-defined]
    assert speech(150, 170).direction == "unchanged"  # type: ignore[attr-defined]
    assert speech(190, 114).direction == "unchanged"  # type: ignore[attr-defined]  # 15 over → 16 under: same gap
    assert speech(110, 200).direction == "declined"  # type: ignore[attr-defined]
    assert (
        changes(summarize([week(0, speech=150, pauses=5), week(1, speech=150, pauses=9)], baseline_weeks=1))[
            "mattr"
        ].better
        == "higher"
    )  # type: ignore[attr-defined]


@pytest.fixture
def default_gc_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_startup_tunes_the_garbage_collector_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, default_gc_thresholds: None
) -> None:
    frozen: list[bool] = []

    def freeze() -> bool:  # the real one would freeze this test process's objects for good
        frozen.append(True)
        return True

    monkeypatch.setattr("api.app.freeze_startup_objects", freeze)
    assert tune_garbage_collector(ApiSettings(gc_young_threshold=0)) == (700, 10, 10)  # 0: the interpreter's
    assert frozen == [True]
    monkeypatch.setenv("COACH_API_GC_YOUNG_THRESHOLD", "123456")
    settings = ApiSettings()
    assert settings.gc_young_threshold == 123_456
    assert tune_garbage_collector(settings) == (123_456, 50, 100) == gc.get_threshold()
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        ApiSettings(gc_young_threshold=-1)


class _Reader:
    """A stand-in for :class:`api.analytics.ClickHouseReader` answering every query with ``rows``."""

    def __init__(self, rows: list[dict[str, object]]) -> None:
        self._rows = rows

    def table(self, name: str) -> str:
        return f"coach.{name}"

    def rows(self, sql: str, parameters: object = None, *, name: str) -> list[dict[str, object]]:
        return [dict(row) for row in self._rows]


def _metrics_row(*, detected: bool) -> dict[str, object]:
    return {
        "occurred_at": MONDAY, "language": "en", "word_count": 60, "total_duration_s": 30.0, "phonation_time_s": 24.0,
        "speech_rate_wpm": 120.0, "articulation_rate_wpm": 150.0, "silent_pause_count": 4,
        "silent_pauses_per_minute": 8.0, "mean_silent_pause_s": 0.6, "mean_length_of_run": 12.0,
        "filled_pause_count": 3, "filled_pauses": {"um": 2}, "filled_pauses_per_100_words": 5.0,
        "discourse_marker_count": 1, "discourse_markers": {"like": 1}, "repetition_count": 0, "distinct_words": 40,
        "mattr": 0.7, "mtld": 50.0, "vocabulary_sufficient": True, "pause_threshold_s": 0.25,
        "asr_model": "faster-whisper/base", "metrics_version": 2, "syllable_count": 84, "speech_rate_sps": 2.8,
        "articulation_rate_sps": 3.5, "mean_length_of_run_syllables": 16.8, "hesitation_detection": detected,
        "filled_pauses_per_minute": 6.0, "voiced_hesitation_count": 1, "hallucinated_word_count": 0,
    }  # fmt: skip


def test_submission_metrics_show_filled_pauses_as_unknown_without_hesitation_detection() -> None:
    from api.analytics import fetch_submission_metrics

    heard = fetch_submission_metrics(_Reader([_metrics_row(detected=True)]), "u", uuid.uuid4())  # type: ignore[arg-type]
    assert heard is not None and heard.hesitation_detection is True
    assert (heard.filled_pause_count, heard.filled_pauses_per_100_words, heard.filled_pauses_per_minute) == (
        3,
        5.0,
        6.0,
    )
    assert (heard.speech_rate_sps, heard.articulation_rate_sps, heard.mean_length_of_run_syllables) == (2.8, 3.5, 16.8)
    unheard = fetch_submission_metrics(_Reader([_metrics_row(detected=False)]), "u", uuid.uuid4())  # type: ignore[arg-type]
    assert unheard is not None and unheard.hesitation_detection is False
    body = unheard.model_dump()
    for name in ("filled_pause_count", "filled_pauses", "filled_pauses_per_100_words", "filled_pauses_per_minute",
                 "voiced_hesitation_count"):  # fmt: skip
        assert body[name] is None, name
    assert body["speech_rate_sps"] == 2.8 and body["syllable_count"] == 84  # the rest is known


def test_windows_without_hesitation_detection_have_unknown_filled_pauses_and_the_page_shows_a_dash() -> None:
    from api.analytics import fetch_learner_windows

    base = week(0, speech=120.0, pauses=8.0).model_dump()
    base |= {"user_id": "u", "window_kind": "weekly", "speech_rate_sps": 2.9, "articulation_rate_sps": 3.6,
             "mean_length_of_run_syllables": 15.0, "filled_pauses_per_minute": 4.0}  # fmt: skip
    rows = [base | {"hesitation_detected_submissions": 0}, base | {"hesitation_detected_submissions": 2}]
    rows[1]["window_start"], rows[1]["window_end"] = MONDAY + timedelta(weeks=1), MONDAY + timedelta(weeks=2)
    unheard, heard = fetch_learner_windows(_Reader(rows), "u")["weekly"]  # type: ignore[arg-type]
    assert (unheard.filled_pauses_per_100_words, unheard.filled_pauses_per_minute) == (None, None)
    assert (heard.filled_pauses_per_100_words, heard.filled_pauses_per_minute) == (5.0, 4.0)
    assert unheard.speech_rate_sps == heard.speech_rate_sps == 2.9
    summary = summarize([unheard, unheard], baseline_weeks=1)
    by_metric = changes(summary)
    assert by_metric["articulation_rate_sps"].baseline == 3.6  # type: ignore[attr-defined]
    assert by_metric["filled_pauses_per_minute"].baseline is None  # type: ignore[attr-defined]
    assert by_metric["filled_pauses_per_minute"].direction == "unknown"  # type: ignore[attr-defined]
    page = render_progress_page("u", "weekly", [unheard], summary)  # type: ignore[arg-type]
    row = page.split('<tr data-metric="filled_pauses_per_minute">', 1)[1].split("</tr>", 1)[0]
    assert "<td>–</td>" in row and "0.00" not in row
    assert '<tr data-metric="mean_length_of_run_syllables">' in page and 'id="chart-pace_syllables"' in page
