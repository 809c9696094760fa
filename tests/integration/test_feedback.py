"""The feedback worker through the real broker and PostgreSQL: TranscriptCreated in, FeedbackGenerated out.

* one feedback event per submission, also when the transcript is re-delivered (same bytes) or transcribed again
  (a new TranscriptCreated for the same submission);
* offsets committed after the feedback was acknowledged;
* invalid and word-less transcripts dead-lettered with the reason, the partition moving on;
* the LLM provider (a local OpenAI-protocol server) recorded on the event, failover included;
* a ledger row left reserved by a crash is re-published identically (same event_id).

Ordering trick: every test ends with a *marker* transcript of the same learner. Same key → same partition →
handled after the earlier ones, so once the marker's feedback is on the topic the earlier transcripts were done.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import REGISTRY

from feedback.settings import FeedbackSettings
from feedback.store import FeedbackStore
from feedback.worker import FeedbackWorker
from flows.metrics import compute_metrics
from runtime.kafka import EventProducer
from runtime.settings import PlatformSettings
from schemas import (
    FEEDBACK,
    TRANSCRIPTS,
    TRANSCRIPTS_DLQ,
    ConsumerGroups,
    FeedbackGenerated,
    FeedbackGeneratedPayload,
    StageTimings,
    TranscriptCreated,
    TranscriptCreatedPayload,
    TranscriptWords,
    Word,
    new_event_id,
)
from tests.event_reader import read_until
from tests.fake_openai import FakeOpenAI, Fault, Reply

pytestmark = pytest.mark.integration

SENTENCE = (
    "my favourite place in the city is a small park near the river where old trees give shade in summer and "
    "children play football on the grass while their parents talk on wooden benches"
).split()


@pytest.fixture(scope="module")
def platform(migrated_stack: PlatformSettings) -> PlatformSettings:
    """The local stack after ``coach migrate`` (``projections/sql/0002_feedback_dedup.sql`` creates the ledger)."""
    return migrated_stack


@pytest.fixture(scope="module")
def producer(platform: PlatformSettings) -> EventProducer:
    return EventProducer(platform, client_id="test-feedback")


def llm_first(primary: FakeOpenAI, **overrides: Any) -> FeedbackSettings:
    """Settings whose chain is the fake ``primary`` endpoint (named ``openai``, model ``gpt-test``), then the rules;
    no metrics port; ``overrides`` set the rest."""
    return FeedbackSettings(
        providers=("primary", "rules"),
        primary_base_url=primary.base_url,
        primary_name="openai",
        primary_model="gpt-test",
        metrics_port=0,
        **overrides,
    )


@contextmanager
def running_worker(platform: PlatformSettings, settings: FeedbackSettings | None = None) -> Iterator[FeedbackWorker]:
    """A feedback worker in a thread, stopped (batch finished, offsets committed) on exit."""
    stop = threading.Event()
    worker = FeedbackWorker(platform, settings or FeedbackSettings(metrics_port=0))
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=60)
        worker.close()
        assert not thread.is_alive(), "feedback worker did not stop"


def transcript(user_id: str, *, wpm: float = 150.0, words: int = 30, submission_id: uuid.UUID | None = None,
               text_words: list[str] | None = None) -> TranscriptCreated:  # fmt: skip
    """A TranscriptCreated with words timed at about ``wpm`` (each word 90 % of its slot)."""
    tokens = (text_words if text_words is not None else SENTENCE)[:words]
    slot = 60.0 / wpm
    timed = [
        Word(word=f" {t}", start=round(i * slot, 3), end=round(i * slot + 0.9 * slot, 3), probability=0.9)
        for i, t in enumerate(tokens)
    ]
    return TranscriptCreated(
        user_id=user_id,
        submission_id=submission_id or uuid.uuid4(),
        producer="transcription",
        correlation_id=new_event_id(),
        causation_id=new_event_id(),
        payload=TranscriptCreatedPayload(
            text=" ".join(tokens),
            language="en",
            language_probability=1.0,
            duration_s=max(1.0, len(tokens) * slot + 0.5),
            segments=[],
            words=TranscriptWords.of(timed),
            asr_model="faster-whisper/tiny.en",
            compute_type="int8",
            device="cpu",
            timings=StageTimings(queue_wait_ms=1, fetch_ms=1, decode_ms=1, vad_ms=1, inference_ms=1, batch_size=1),
        ),
    )


def feedback_for(*submission_ids: uuid.UUID, timeout_s: float = 120) -> list[dict[str, Any]]:
    """Every FeedbackGenerated on the topic for these submissions, once each of them has at least one."""
    wanted = {str(s) for s in submission_ids}

    def done(seen: list[dict[str, Any]]) -> bool:
        return wanted <= {str(s.get("submission_id")) for s in seen}

    return [s for s in read_until(FEEDBACK.name, done, timeout_s=timeout_s) if str(s.get("submission_id")) in wanted]


def user() -> str:
    return f"learner-{uuid.uuid4().hex[:10]}"


def test_feedback_once_per_submission_even_when_redelivered(
    platform: PlatformSettings, producer: EventProducer
) -> None:
    learner = user()
    fast = transcript(learner, wpm=240, words=30)
    skipped_before = REGISTRY.get_sample_value("coach_feedback_duplicates_total", {"action": "skipped"}) or 0.0
    with running_worker(platform):
        delivered = producer.send(TRANSCRIPTS.name, fast)
        [first] = feedback_for(fast.submission_id)

        producer.send(TRANSCRIPTS.name, fast)  # re-delivery: the same bytes again
        retranscribed = transcript(learner, wpm=240, words=30, submission_id=fast.submission_id)
        producer.send(TRANSCRIPTS.name, retranscribed)  # a second transcript of the same submission
        marker = transcript(learner)
        producer.send(TRANSCRIPTS.name, marker)
        events = feedback_for(fast.submission_id, marker.submission_id)

    assert [e["event_id"] for e in events if e["submission_id"] == str(fast.submission_id)] == [first["event_id"]]
    skipped = REGISTRY.get_sample_value("coach_feedback_duplicates_total", {"action": "skipped"}) or 0.0
    # Both re-deliveries reached the worker and were skipped (>=: in a full run the topic also holds other
    # tests' transcripts, which a fresh worker of the same group may see again).
    assert skipped - skipped_before >= 2

    event = FeedbackGenerated.model_validate({k: v for k, v in first.items() if not k.startswith("_")})
    assert first["_key"] == learner
    assert (event.user_id, event.producer) == (learner, "feedback")
    assert event.causation_id == fast.event_id and event.correlation_id == fast.correlation_id
    payload = event.payload
    metrics = compute_metrics(fast.payload.words.timed(), recording_duration_s=fast.payload.duration_s)
    assert (payload.provider, payload.model, payload.asr_model) == ("rules", None, "faster-whisper/tiny.en")
    assert payload.metrics_version == metrics.metrics_version
    assert [(a.provider, a.outcome) for a in payload.attempts] == [("rules", "ok")]
    [rate] = [p for p in payload.points if p.metric == "speech_rate_wpm"]
    assert rate.kind == "work_on" and "slow down" in rate.message
    assert rate.value == round(metrics.speech_rate_wpm or 0, 3)

    with psycopg.connect(platform.postgres_dsn) as conn:
        row = conn.execute(
            "SELECT event_id, transcript_event_id, published_at IS NOT NULL FROM feedback_dedup"
            " WHERE submission_id = %s",
            (fast.submission_id,),
        ).fetchone()
    assert row == (event.event_id, fast.event_id, True)

    # offsets were committed past the transcript once its feedback was acknowledged
    consumer = Consumer({"bootstrap.servers": platform.bootstrap_servers, "group.id": ConsumerGroups.FEEDBACK})
    try:
        [committed] = consumer.committed([TopicPartition(TRANSCRIPTS.name, delivered.partition() or 0)], timeout=10)
    finally:
        consumer.close()
    assert committed.offset > (delivered.offset() or 0)


def test_unusable_transcripts_are_dead_lettered_and_the_partition_moves_on(
    platform: PlatformSettings, producer: EventProducer
) -> None:
    learner = user()
    silent = transcript(learner, text_words=[])
    raw = Producer({"bootstrap.servers": platform.bootstrap_servers})
    raw.produce(TRANSCRIPTS.name, key=learner.encode(), value=b'{"event_type": "TranscriptCreated", "oops": 1}')
    raw.flush(30)
    with running_worker(platform):
        producer.send(TRANSCRIPTS.name, silent)
        marker = transcript(learner)
        producer.send(TRANSCRIPTS.name, marker)
        seen = read_until(
            FEEDBACK.name, lambda got: str(marker.submission_id) in {str(g.get("submission_id")) for g in got}
        )
    assert not [e for e in seen if e.get("submission_id") == str(silent.submission_id)]

    def both(seen: list[dict[str, Any]]) -> bool:
        return len([s for s in seen if s.get("original_key") == learner]) >= 2

    records = [r for r in read_until(TRANSCRIPTS_DLQ.name, both, timeout_s=60) if r.get("original_key") == learner]
    by_class = {r["error_class"]: r for r in records}
    assert set(by_class) == {"ValidationError", "NoWords"}
    assert by_class["NoWords"]["submission_id"] == str(silent.submission_id)
    assert "no words" in by_class["NoWords"]["reason"]
    assert by_class["ValidationError"]["consumer_group"] == ConsumerGroups.FEEDBACK
    assert "invalid TranscriptCreated" in by_class["ValidationError"]["reason"]


def test_llm_feedback_and_failover_are_recorded_on_the_event(
    platform: PlatformSettings, producer: EventProducer
) -> None:
    learner = user()
    failing_words = ["zebra", *SENTENCE[1:]]

    def responder(body: dict[str, Any]) -> Fault | None:  # the 'zebra' transcript meets a failing service
        return Fault(503) if "zebra" in body["messages"][1]["content"] else None

    with FakeOpenAI(default=Reply(prompt_tokens=400, completion_tokens=90), responder=responder) as primary:
        settings = llm_first(primary, retry_attempts=2, retry_initial_wait_s=0.05)
        by_llm, by_rules = transcript(learner), transcript(learner, wpm=90, text_words=failing_words)
        with running_worker(platform, settings):
            producer.send(TRANSCRIPTS.name, by_llm)
            producer.send(TRANSCRIPTS.name, by_rules)
            events = {e["submission_id"]: e for e in feedback_for(by_llm.submission_id, by_rules.submission_id)}
    llm = FeedbackGeneratedPayload.model_validate(events[str(by_llm.submission_id)]["payload"])
    assert (llm.provider, llm.model) == ("openai", "gpt-test")
    assert (llm.usage.prompt_tokens, llm.usage.completion_tokens) == (400, 90)
    assert [(a.provider, a.outcome) for a in llm.attempts] == [("openai", "ok")]
    metrics = compute_metrics(by_llm.payload.words.timed())
    assert {p.metric: p.value for p in llm.points}["speech_rate_wpm"] == round(metrics.speech_rate_wpm or 0, 3)

    fallback = FeedbackGeneratedPayload.model_validate(events[str(by_rules.submission_id)]["payload"])
    assert fallback.provider == "rules"
    assert [(a.provider, a.outcome) for a in fallback.attempts] == [
        ("openai", "error"),
        ("openai", "error"),
        ("rules", "ok"),
    ]
    assert "HTTP 503" in (fallback.attempts[0].error or "")
    assert any(p.metric == "speech_rate_wpm" and "speed up" in p.message for p in fallback.points)


def test_a_reserved_but_unpublished_event_is_republished_identically(
    platform: PlatformSettings, producer: EventProducer
) -> None:
    """The crash window: the ledger holds a reserved event that may or may not have reached the topic."""
    learner = user()
    source = transcript(learner)
    reserved = FeedbackGenerated(
        **source.caused(producer="feedback"),
        payload=FeedbackGeneratedPayload(
            provider="rules", latency_ms=1.0, text="reserved before the crash", points=[], metrics_version=1,
            asr_model=source.payload.asr_model,
        ),
    )  # fmt: skip
    store = FeedbackStore(platform.postgres_dsn)
    try:
        assert store.reserve(reserved, transcript_event_id=source.event_id).event_id == reserved.event_id
        with running_worker(platform):
            producer.send(TRANSCRIPTS.name, source)
            marker = transcript(learner)
            producer.send(TRANSCRIPTS.name, marker)
            events = feedback_for(source.submission_id, marker.submission_id)
        entry = store.find(source.submission_id)
    finally:
        store.close()
    [republished] = [e for e in events if e["submission_id"] == str(source.submission_id)]
    assert republished["event_id"] == str(reserved.event_id)
    assert republished["payload"]["text"] == "reserved before the crash"
    assert entry is not None and entry.published


def test_vocabulary_rule_uses_the_learners_level_from_postgres(
    platform: PlatformSettings, producer: EventProducer
) -> None:
    beginner, advanced = user(), user()
    with psycopg.connect(platform.postgres_dsn, autocommit=True) as conn:
        for learner, level in ((beginner, "A1"), (advanced, "c1")):
            conn.execute("INSERT INTO learners (user_id, target_level) VALUES (%s, %s)", (learner, level))
    repetitive = (list(dict.fromkeys(SENTENCE))[:30] * 3)[:80]  # MATTR = 30/50 = 0.6
    sent = {learner: transcript(learner, words=80, text_words=repetitive) for learner in (beginner, advanced)}
    with running_worker(platform):
        for event in sent.values():
            producer.send(TRANSCRIPTS.name, event)
        events = {e["user_id"]: e for e in feedback_for(*(t.submission_id for t in sent.values()))}
    points = {
        learner: {p["metric"]: p for p in events[learner]["payload"]["points"]} for learner in (beginner, advanced)
    }
    assert (points[beginner]["mattr"]["kind"], points[beginner]["mattr"]["value"]) == ("went_well", 0.6)
    assert (points[advanced]["mattr"]["kind"], points[advanced]["mattr"]["value"]) == ("work_on", 0.6)
    assert "C1 (0.71)" in points[advanced]["mattr"]["message"]


def test_llm_budget_markup_and_provider_errors_are_bounded(platform: PlatformSettings, producer: EventProducer) -> None:
    """Issue 16 item 6: past the learner's daily LLM budget the rules answer (and the event says so); an LLM's
    markup and links never reach the event; a provider error quoting an API key is masked on the event."""
    learner, other = user(), user()
    hostile = (
        '{"summary": "## Great **work**! Read [this](http://evil.example/x) <img src=x onerror=alert(1)> now",'
        ' "points": [{"kind": "work_on", "metric": "speech_rate_wpm", "message": "Slow *down* www.evil.example"}]}'
    )

    def responder(body: dict[str, Any]) -> Fault | Reply | None:
        if "zebra" in body["messages"][1]["content"]:
            return Fault(401, message="Incorrect API key provided: sk-live-0123456789abcdef0123")
        return Reply(content=hostile)

    with FakeOpenAI(responder=responder) as primary:
        settings = llm_first(primary, retry_attempts=1, llm_daily_budget=1)
        first, second = transcript(learner), transcript(learner)
        refused = transcript(other, text_words=["zebra", *SENTENCE[1:]])
        with running_worker(platform, settings):
            producer.send(TRANSCRIPTS.name, first)
            producer.send(TRANSCRIPTS.name, second)
            producer.send(TRANSCRIPTS.name, refused)
            events = {
                e["submission_id"]: FeedbackGeneratedPayload.model_validate(e["payload"])
                for e in feedback_for(first.submission_id, second.submission_id, refused.submission_id)
            }
    by_llm, by_rules = events[str(first.submission_id)], events[str(second.submission_id)]
    assert by_llm.provider == "openai" and not by_llm.llm_budget_exhausted
    assert by_llm.text == "Great work! Read this now"
    assert [p.message for p in by_llm.points] == ["Slow down"]
    assert by_rules.provider == "rules" and by_rules.llm_budget_exhausted
    assert [a.provider for a in by_rules.attempts] == ["rules"]  # no LLM request was made
    masked = events[str(refused.submission_id)]
    assert masked.provider == "rules" and masked.attempts[0].outcome == "error"
    assert "HTTP 401" in (masked.attempts[0].error or "")
    assert "sk-live" not in (masked.attempts[0].error or "") and "***" in (masked.attempts[0].error or "")
