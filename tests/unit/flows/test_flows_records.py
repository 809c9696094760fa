"""Scoring transcripts into metric rows, the error stream, and window summaries (no engines)."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from flows.aggregate import _metric_values, distribution, latest_per_submission, window_row
from flows.calendar import LearnerCalendar, WindowBounds, WindowKind
from flows.clickhouse_sink import dedup_token
from flows.metrics import METRICS_VERSION, compute_metrics, vocabulary_metrics
from flows.metrics import lexical_vocabulary as window_vocabulary
from flows.records import (
    Scored,
    SourceMessage,
    WindowItem,
    lexical_tokens,
    per_100_words,
    score_batch,
    submission_row,
)
from flows.synthetic import synthetic_transcript
from flows.tables import SUBMISSION_COLUMNS, WINDOW_COLUMNS, TableNames
from schemas.dead_letter import DeadLetterRecord
from schemas.registry import decode_event, encode_event

pytestmark = pytest.mark.unit


def score(message: SourceMessage, *, pause_threshold_s: float) -> Scored | DeadLetterRecord:
    """One message scored as a batch of one."""
    (result,) = score_batch([message], pause_threshold_s=pause_threshold_s)
    return result


def _metric_columns(kept: list[WindowItem]) -> list[list[float | None]]:
    """The values each window distribution summarises, one list per metric of WINDOW_DISTRIBUTION_METRICS."""
    columns = zip(*map(_metric_values, kept), strict=True)
    return [[None if value is None else float(value) for value in column] for column in columns]


AT = datetime(2024, 3, 5, 10, tzinfo=UTC)


def message(value: bytes | None, offset: int = 7, key: bytes | None = b"u1") -> SourceMessage:
    return SourceMessage("speech.transcripts.v1", 2, offset, key, value)


def test_score_computes_every_metric_with_the_shared_functions() -> None:
    event = synthetic_transcript("u1", AT, words=80)
    result = score(message(encode_event(event)), pause_threshold_s=0.25)
    assert isinstance(result, Scored)
    assert result.metrics == compute_metrics(
        event.payload.words.timed(), pause_threshold_s=0.25, recording_duration_s=event.payload.duration_s
    )
    row = dict(zip(SUBMISSION_COLUMNS, submission_row(result, AT), strict=True))
    assert row["submission_id"] == str(event.submission_id) and row["occurred_at"] == AT
    assert row["asr_model"] == "faster-whisper/tiny.en" and row["metrics_version"] == METRICS_VERSION
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == ("speech.transcripts.v1", 2, 7)
    m = result.metrics
    assert row["filled_pauses_per_100_words"] == pytest.approx(100 * m.filled_pause_count / m.word_count)
    assert row["hesitation_detection"] is False and row["syllable_count"] == m.syllable_count > 0
    assert row["speech_rate_sps"] == m.speech_rate_sps and row["filled_pauses_per_minute"] == m.filled_pauses_per_minute


@pytest.mark.parametrize(
    ("value", "error_class", "reason"),
    [
        (b"{not json", "JSONDecodeError", "Expecting property name"),
        (json.dumps({"event_type": "Nope", "schema_version": 1}).encode(), "ValidationError", "unknown event_type"),
        (None, "EmptyValue", "tombstone"),
    ],
)
def test_unscorable_messages_become_dead_letters(value: bytes | None, error_class: str, reason: str) -> None:
    result = score(message(value), pause_threshold_s=0.25)
    assert isinstance(result, DeadLetterRecord)
    assert (result.original_topic, result.original_partition, result.original_offset) == ("speech.transcripts.v1", 2, 7)
    assert result.error_class == error_class and reason in result.reason
    assert result.consumer_group == "flows.metrics" and result.original_value() == (value or b"")


def _decoded(data: bytes | str | dict[str, object]) -> tuple[str, object]:
    try:
        return "ok", decode_event(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return type(exc).__name__, str(exc)


_V3_ONLY = ("hesitations", "initial_prompt", "redecoded_chunks", "unprompted_chunks", "packed_with")


def _as_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a v3 ``TranscriptCreated``) as v2: without the fields v3 added."""
    payload = {key: value for key, value in raw["payload"].items() if key not in _V3_ONLY}
    return {**raw, "schema_version": 2, "payload": payload}


def _as_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a v3 ``TranscriptCreated``) in the v1 layout: one object per word."""
    raw = _as_v2(raw)
    words = raw["payload"]["words"]
    rows = [
        {"word": w, "start": s, "end": e, "probability": p}
        for w, s, e, p in zip(words["text"], words["start"], words["end"], words["probability"], strict=True)
    ]
    return {**raw, "schema_version": 1, "payload": {**raw["payload"], "words": rows}}


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw,
        lambda raw: {**raw, "schema_version": 3.0},  # the JSON fast path's Literal[3] would take 3.0
        lambda raw: {**raw, "schema_version": True},
        lambda raw: {**raw, "schema_version": "3"},
        lambda raw: {**raw, "schema_version": 4},
        lambda raw: {**raw, "schema_version": 2},  # v2 with v3's fields: rejected by v2's contract
        _as_v2,  # a valid v2 event: upcast to v3
        lambda raw: {**raw, "schema_version": 1},  # v1 with v2's word arrays: rejected by v1's contract
        _as_v1,  # a valid v1 event: upcast to v3
        lambda raw: {key: value for key, value in raw.items() if key != "schema_version"},
        lambda raw: {**raw, "event_type": "Nope"},
        lambda raw: {**raw, "occurred_at": 1_700_000_000},
        lambda raw: {**raw, "occurred_at": "2024-03-05T10:00:00"},
        lambda raw: {**raw, "payload": {**raw["payload"], "duration_s": "75.5"}},
        lambda raw: {**raw, "payload": {**raw["payload"], "duration_s": 0.5}},  # words after the clip's end
        lambda raw: {**raw, "payload": {**raw["payload"], "words": [{"word": "a", "start": 2, "end": 1}]}},
        lambda raw: {
            **raw,
            "payload": {**raw["payload"], "words": {"text": ["a"], "start": [2], "end": [1], "probability": [1]}},
        },
        lambda raw: {
            **raw,
            "payload": {**raw["payload"], "words": {"text": ["a", "b"], "start": [1], "end": [2], "probability": [1]}},
        },
        lambda raw: _as_v1(
            {
                **raw,
                "payload": {**raw["payload"], "words": {"text": ["a"], "start": [2], "end": [1], "probability": [1]}},
            }
        ),
    ],
)
@pytest.mark.parametrize("spacing", [(",", ":"), (", ", ": ")])
def test_decoding_bytes_equals_decoding_the_parsed_dict(edit: object, spacing: tuple[str, str]) -> None:
    """``decode_event`` validates JSON bytes straight with pydantic-core: same events, same errors as the
    general path (``json.loads`` + checks + ``model_validate``, what a dict goes through)."""
    raw = edit(json.loads(encode_event(synthetic_transcript("u1", AT, words=30))))  # type: ignore[operator]
    text = json.dumps(raw, separators=spacing)
    expected = _decoded(json.loads(text))
    assert _decoded(text.encode()) == expected
    assert _decoded(text) == expected


def test_decoding_rejects_a_float_schema_version_hidden_behind_an_escaped_duplicate_key() -> None:
    text = encode_event(synthetic_transcript("u1", AT, words=5)).decode()
    text = text[:-1] + ',"schema\\u005fversion":1.0}'
    assert _decoded(text.encode())[0] == "ValidationError"


def test_other_event_types_on_the_transcripts_topic_are_dead_lettered_with_their_ids() -> None:
    event = synthetic_transcript("u1", AT)
    raw = json.loads(encode_event(event))
    raw["event_type"], raw["schema_version"], raw["payload"] = (
        "FeedbackGenerated",
        1,
        {
            "provider": "rules",
            "latency_ms": 1.0,
            "text": "ok",
            "points": [],
            "metrics_version": 1,
            "asr_model": "m",
        },
    )
    result = score(message(json.dumps(raw).encode()), pause_threshold_s=0.25)
    assert isinstance(result, DeadLetterRecord)
    assert result.error_class == "UnexpectedEvent"
    assert "FeedbackGenerated does not belong on speech.transcripts.v1" in result.reason
    assert result.submission_id == event.submission_id and result.user_id == "u1"


RAW_WORDS: dict[int, list[str]] = {}


def _item(user: str, at: datetime, offset: int, submission: UUID | None = None) -> WindowItem:
    event = synthetic_transcript(user, at, words=40, seed=offset, submission_id=submission)
    RAW_WORDS[offset] = list(event.payload.words.text)
    scored = score(message(encode_event(event), offset=offset), pause_threshold_s=0.25)
    assert isinstance(scored, Scored)
    return WindowItem.of(scored, "Europe/Berlin")


def test_window_row_counts_a_corrected_transcript_once_and_pools_vocabulary() -> None:
    again = UUID(int=42, version=4)
    items = [
        _item("u1", AT, 1),
        _item("u1", AT + timedelta(hours=1), 2, again),
        _item("u1", AT + timedelta(hours=2), 3, again),
    ]
    kept = latest_per_submission(items)
    assert [i.source_offset for i in kept] == [1, 3]  # the later transcript of submission 42 wins
    daily = _daily_window(items[0])
    row = dict(zip(WINDOW_COLUMNS, window_row("u1", "Europe/Berlin", daily, items, AT), strict=True))
    assert row["submissions"] == 2 and row["timezone"] == "Europe/Berlin"
    assert row["window_start"] == datetime(2024, 3, 4, 23, tzinfo=UTC)  # local midnight in Berlin (UTC+1)
    assert row["word_count"] == sum(i.word_count for i in kept)
    pooled = vocabulary_metrics([w for i in kept for w in RAW_WORDS[i.source_offset]])
    assert (row["distinct_words"], row["mattr"], row["mtld"]) == (pooled.distinct_words, pooled.mattr, pooled.mtld)
    assert row["vocabulary_sufficient"] is True and row["asr_models"] == ["faster-whisper/tiny.en"]
    rates = sorted(i.speech_rate_wpm for i in kept)
    assert (row["speech_rate_wpm_min"], row["speech_rate_wpm_max"]) == (rates[0], rates[-1])
    with pytest.raises(ValueError):
        window_row("u1", "UTC", daily, [], AT)


def _daily_window(item: WindowItem) -> WindowBounds:
    """The bounds of the daily window of ``item``'s local time."""
    calendar = LearnerCalendar()
    return next(
        calendar.bounds(w) for w in calendar.window_ids(item.local_time) if calendar.bounds(w).kind is WindowKind.DAILY
    )


def test_window_counts_filled_pauses_only_where_hesitation_detection_ran() -> None:
    items = [_item("u1", AT + timedelta(hours=i), 10 + i) for i in range(3)]
    heard = items[1]._replace(hesitation_detection=True, filled_pause_count=4)
    items[1] = heard
    daily = _daily_window(items[0])
    row = dict(zip(WINDOW_COLUMNS, window_row("u1", "Europe/Berlin", daily, items, AT), strict=True))
    assert row["hesitation_detected_submissions"] == 1 and row["filled_pause_count"] == 4
    assert row["filled_pauses_per_100_words"] == pytest.approx(100 * 4 / heard.word_count)
    assert row["filled_pauses_per_minute"] == pytest.approx(60 * 4 / heard.total_duration_s)
    assert row["syllable_count"] == sum(i.syllable_count for i in items) > row["word_count"] // 2
    rates = sorted(i.speech_rate_sps for i in items if i.speech_rate_sps is not None)
    assert len(rates) == 3 and (row["speech_rate_sps_min"], row["speech_rate_sps_max"]) == (rates[0], rates[-1])
    assert row["mean_length_of_run_syllables_avg"] is not None and row["articulation_rate_sps_p50"] is not None
    unheard = dict(zip(WINDOW_COLUMNS, window_row("u1", "Europe/Berlin", daily, [items[0], items[2]], AT), strict=True))
    assert unheard["hesitation_detected_submissions"] == 0 and unheard["filled_pause_count"] == 0
    assert unheard["filled_pauses_per_100_words"] is None and unheard["filled_pauses_per_minute"] is None
    assert unheard["filled_pauses_per_100_words_avg"] is None and unheard["filled_pauses_per_minute_max"] is None


@pytest.mark.parametrize("count", [0, 1, 49, 50, 51, 400])
def test_window_vocabulary_equals_vocabulary_metrics_of_the_raw_words(count: int) -> None:
    rng = random.Random(count)
    pieces = [
        " Um,",
        " uh",
        " ERM.",
        " don't",
        " Don’t",
        " well-known",
        " U.S.",
        " 3.5",
        " 1,000",
        " --",
        " ...",
        " 'cause",
        " mm",
        " hmm",
        " cats",
        " Cat",
        " the",
        " The.",
        " naïve",
        " café",
        " x_y",
        " like",
    ]
    words = [rng.choice(pieces) + rng.choice(["", "", "s", "!"]) for _ in range(count)]
    assert window_vocabulary(lexical_tokens(words)) == vocabulary_metrics(words)
    event = synthetic_transcript("u", AT, words=count)
    raw = list(event.payload.words.text)
    assert window_vocabulary(lexical_tokens(raw)) == vocabulary_metrics(raw)


def test_dedup_tokens_follow_positions_and_table_names_are_checked() -> None:
    assert dedup_token("t", ["a:0:1", "a:0:2"]) == dedup_token("t", ["a:0:1", "a:0:2"])
    assert dedup_token("t", ["a:0:1"]) != dedup_token("t", ["a:0:2"]) != dedup_token("u", ["a:0:2"])
    names = TableNames.for_version("coach", 3)
    assert names.all() == ("submission_metrics_v3", "learner_metrics_windows_v3", "late_events_v3")
    with pytest.raises(ValueError):
        TableNames("coach; DROP TABLE x")


def test_score_batch_gives_what_batches_of_one_give_for_each_message() -> None:
    """The dataflow's ``score`` step: a bad message affects no other of its batch (same Scored values and the same
    dead letters, cause and ids, as scoring the messages one by one), in order, for a batch mixing good and bad."""
    good = [encode_event(synthetic_transcript(f"u{i}", AT + timedelta(days=i), words=20 + 15 * i)) for i in range(6)]
    v1 = json.dumps(_as_v1(json.loads(good[0]))).encode()
    broken = json.loads(good[1])
    broken["payload"]["words"]["end"][3] = broken["payload"]["words"]["start"][3] - 0.1
    empty = json.loads(good[2])
    empty["payload"]["words"] = {"text": [], "start": [], "end": [], "probability": []}
    values = [good[0], None, b"{not json", v1, json.dumps(broken).encode(), *good[1:], json.dumps(empty).encode()]
    messages = [message(value, offset=offset) for offset, value in enumerate(values)]
    batch = score_batch(messages, pause_threshold_s=0.25)
    one_by_one = [score(m, pause_threshold_s=0.25) for m in messages]
    assert len(batch) == len(messages)
    for got, expected in zip(batch, one_by_one, strict=True):
        if isinstance(expected, DeadLetterRecord):
            assert isinstance(got, DeadLetterRecord)
            assert (got.error_class, got.reason, got.original_offset, got.submission_id) == (
                expected.error_class,
                expected.reason,
                expected.original_offset,
                expected.submission_id,
            )
        else:
            assert got == expected
    kinds = [type(result).__name__ for result in batch]
    assert kinds == ["Scored", "DeadLetterRecord", "DeadLetterRecord", "Scored", "DeadLetterRecord"] + ["Scored"] * 6


def test_window_metric_columns_follow_their_definition() -> None:
    from flows.tables import WINDOW_DISTRIBUTION_METRICS

    items = [_item("u1", AT + timedelta(hours=i), offset=100 + i) for i in range(4)]
    empty = json.loads(encode_event(synthetic_transcript("u1", AT, words=5)))
    empty["payload"]["words"] = {"text": [], "start": [], "end": [], "probability": []}
    no_words = score(message(json.dumps(empty).encode(), offset=99), pause_threshold_s=0.25)
    assert isinstance(no_words, Scored)
    items.insert(2, WindowItem.of(no_words, "UTC"))
    items[0], items[3] = (item._replace(hesitation_detection=True) for item in (items[0], items[3]))
    columns = _metric_columns(items)
    assert len(columns) == len(WINDOW_DISTRIBUTION_METRICS)
    for name, column in zip(WINDOW_DISTRIBUTION_METRICS, columns, strict=True):
        if name == "filled_pauses_per_100_words":
            # unknown (None) without hesitation detection
            expected = [
                per_100_words(item.filled_pause_count, item.word_count) if item.hesitation_detection else None
                for item in items
            ]
            assert expected[0] is not None and expected[1] is None
        elif name == "filled_pauses_per_minute":
            expected = [item.filled_pauses_per_minute if item.hesitation_detection else None for item in items]
            assert expected[0] is not None and expected[1] is None
        else:
            expected = [None if getattr(item, name) is None else float(getattr(item, name)) for item in items]
        assert column == expected, name
        assert all(value is None or type(value) is float for value in column), name
    assert columns[WINDOW_DISTRIBUTION_METRICS.index("speech_rate_wpm")][2] is None  # no words: undefined


def test_score_batch_falls_back_to_one_by_one_when_the_batch_path_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.records

    real = flows.records.compute_metrics_batch

    def broken(transcripts: list[object], **kwargs: object) -> list[object]:
        if len(transcripts) > 1:
            raise RuntimeError("a defect that only batches of several transcripts trigger")
        return real(transcripts, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(flows.records, "compute_metrics_batch", broken)
    messages = [
        message(encode_event(synthetic_transcript("u1", AT, words=30))),
        message(b"{not json", offset=8),
        message(encode_event(synthetic_transcript("u2", AT, words=40)), offset=9),
    ]
    results = score_batch(messages, pause_threshold_s=0.25)
    assert [type(result).__name__ for result in results] == ["Scored", "DeadLetterRecord", "Scored"]
    assert results[0] == score(messages[0], pause_threshold_s=0.25)


def test_window_rows_distributions_equal_distribution_of_the_metric_columns() -> None:
    from flows.aggregate import window_rows
    from flows.calendar import LearnerCalendar
    from flows.tables import WINDOW_COLUMNS, WINDOW_DISTRIBUTION_METRICS, WINDOW_STATISTICS

    calendar = LearnerCalendar()
    items = [_item("u1", AT + timedelta(hours=5 * i), offset=300 + i) for i in range(9)]
    rng = random.Random(3)
    windows = []
    for window_id in range(12):
        chosen = rng.sample(items, rng.randint(1, len(items)))
        windows.append(("u1", "Europe/Berlin", calendar.bounds(window_id), chosen))
    # an infinite value follows IEEE arithmetic, in a batch as alone
    odd = items[0]._replace(mean_length_of_run=math.inf)
    windows.append(("u1", "Europe/Berlin", calendar.bounds(99), [odd, items[1]]))
    names = [f"{metric}_{stat}" for metric in WINDOW_DISTRIBUTION_METRICS for stat in WINDOW_STATISTICS]
    for (_user, _tz, _bounds, chosen), row in zip(windows, window_rows(windows, AT), strict=True):
        values = dict(zip(WINDOW_COLUMNS, row, strict=True))
        kept = latest_per_submission(chosen)
        expected = [value for column in _metric_columns(kept) for value in distribution(column)]
        assert [values[name] for name in names] == expected  # exactly, None included
    assert values["mean_length_of_run_max"] == math.inf
