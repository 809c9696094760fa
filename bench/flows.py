"""Benchmark of the metric dataflow: throughput through the real broker into ClickHouse (chDB), and replay time.

Usage (with a running local stack; set the COACH_* variables of the stack to use; on a shared machine, hold
the benchmark lock so that runs do not overlap)::

    flock .bench.lock .venv/bin/python -m bench.flows --transcripts 10000 --replay-transcripts 100000

What it does, on topics and a chDB directory of its own (nothing of the platform's is touched):

1. generates synthetic ``TranscriptCreated`` events (``--words`` words each, ``--learners`` learners with one
   submission a day, timezones from CDC events) and produces them to a fresh transcripts topic;
2. **live**: runs the live dataflow (:func:`flows.dataflow.run_metrics_flow`, one worker, recovery on) from the
   earliest offset until it reaches the end offsets, into chDB: transcripts/s per worker over the whole run
   (start-up included: imports, the compiled kernels' cache, the first ClickHouse insert), and in steady state,
   from the count of scored transcripts sampled every 100 ms: the rate between 10 % and 90 % of the input;
3. **replay**: ``replay_metrics`` (verification and swap included) over ``--replay-transcripts`` transcripts;
4. **stage costs** (the peer, measured in the same process): µs per transcript of each stage of the flow's work
   outside the engine (JSON parsing alone, contract decoding, scoring, row building, window rows) on
   ``--stage-transcripts`` events of the same kind, next to the live steady state's µs per transcript
   (:func:`stage_costs`).

Prints one JSON document with the machine, versions, parameters and results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import pydantic_core
from confluent_kafka import Producer

from bench.host import machine
from flows.aggregate import window_rows
from flows.calendar import LearnerCalendar
from flows.dataflow import FlowStats, run_metrics_flow
from flows.records import Scored, SourceMessage, WindowItem, score_batch, submission_row
from flows.replay import replay_metrics
from flows.settings import FlowSettings
from flows.synthetic import synthetic_transcript
from runtime.clickhouse import get_clickhouse_client
from runtime.garbage_collector import raise_young_threshold
from runtime.kafka import ensure_topics
from runtime.settings import PlatformSettings
from schemas.registry import decode_event, encode_event
from schemas.topics import TopicSpec, dlq_of

START = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo")


def _machine() -> dict[str, Any]:
    """The machine facts of :func:`bench.host.machine`, the Python version, the load average now and the versions
    of the engines the dataflow runs on."""
    return {
        **machine(),
        "python": sys.version.split()[0],
        "load_average": os.getloadavg(),
        "versions": {
            name: metadata.version(name)
            for name in ("bytewax", "chdb", "clickhouse-connect", "confluent-kafka", "pydantic-core", "numpy", "numba")
        },
    }


def _templates(count: int, words: int) -> list[str]:
    """Encoded events with placeholders for the fields each copy changes."""
    templates = []
    for i in range(count):
        event = synthetic_transcript("@@USER@@", START, words=words, seed=i)
        text = encode_event(event).decode()
        text = text.replace(str(event.submission_id), "@@SUBMISSION@@").replace(str(event.event_id), "@@EVENT@@")
        text = text.replace(event.occurred_at.isoformat().replace("+00:00", "Z"), "@@AT@@")
        if "@@AT@@" not in text:
            raise RuntimeError("could not template occurred_at")
        templates.append(text)
    return templates


def _transcripts(transcripts: int, learners: int, words: int) -> Iterator[tuple[str, bytes]]:
    """``(user_id, encoded TranscriptCreated)`` of the benchmark's input: round-robin over ``learners`` learners
    (``bench-<n>``), one submission a day each from :data:`START`, ``words`` words each."""
    templates = _templates(64, words)
    for n in range(transcripts):
        user = f"bench-{n % learners}"
        day = n // learners
        at = (START + timedelta(days=day, minutes=(n % learners) % 600)).isoformat().replace("+00:00", "Z")
        value = (
            templates[n % len(templates)]
            .replace("@@USER@@", user)
            .replace("@@SUBMISSION@@", str(uuid.UUID(int=n + 1, version=4)))
            .replace("@@EVENT@@", _uuid7(n + 1))
            .replace("@@AT@@", at)
        )
        yield user, value.encode()


def produce(bootstrap: str, topics: tuple[str, str], transcripts: int, learners: int, words: int) -> float:
    """Produce ``transcripts`` events (round-robin over learners, one a day each) and a CDC event per learner.

    Returns the seconds it took.
    """
    transcripts_topic, learners_topic = topics
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "compression.type": "zstd",
            "queue.buffering.max.messages": 200_000,
        }
    )
    began = time.perf_counter()
    for n in range(learners):
        user = f"bench-{n}"
        change = {
            "before": None,
            "after": {"user_id": user, "timezone": TIMEZONES[n % len(TIMEZONES)]},
            "op": "r",
            "source": {"ts_ms": 1_600_000_000_000},
        }
        producer.produce(learners_topic, key=user.encode(), value=json.dumps(change).encode())
    for user, value in _transcripts(transcripts, learners, words):
        while True:
            try:
                producer.produce(transcripts_topic, key=user.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("produce did not complete")
    return time.perf_counter() - began


def _live_run(settings: FlowSettings, platform: PlatformSettings, recovery: Path) -> list[tuple[float, int]]:
    """Run the live flow to the end offsets; returns ``(perf_counter, transcripts scored)`` samples every 100 ms."""
    stats = FlowStats()
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), stats.scored_total()))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, name="bench-flows-sampler", daemon=True)
    sampler.start()
    try:
        run_metrics_flow(settings=settings, platform=platform, stop_at_end=True, recovery_dir=recovery, stats=stats)
    finally:
        done.set()
        sampler.join()
    samples.append((time.perf_counter(), stats.scored_total()))
    return samples


def _steady_state(samples: list[tuple[float, int]], began: float, total: int) -> dict[str, float | None]:
    """From ``(time, scored)`` samples: seconds until the first transcript was scored (start-up), and the rate
    between the samples where 10 % and 90 % of ``total`` had been scored (linear interpolation between samples)."""

    def when(count: float) -> float | None:
        for (t0, n0), (t1, n1) in zip(samples, samples[1:], strict=False):
            if n0 < count <= n1:
                return t0 + (t1 - t0) * (count - n0) / (n1 - n0)
        return None

    first, low, high = when(0.5), when(0.1 * total), when(0.9 * total)
    steady = round(0.8 * total / (high - low), 1) if low is not None and high is not None and high > low else None
    return {
        "startup_s": round(first - began, 2) if first is not None else None,
        "steady_transcripts_per_s_per_worker": steady,
    }


def _best_us(passes: int, work: Callable[[], object], per: int) -> float:
    """The fastest of ``passes`` runs of ``work``, in µs per one of its ``per`` units."""
    best = float("inf")
    for _ in range(passes):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return round(1e6 * best / per, 2)


def stage_costs(transcripts: int, words: int, settings: FlowSettings, passes: int = 3) -> dict[str, Any]:
    """What each stage of the dataflow's per-transcript work costs in this process, outside the engine: the peer
    of the end-to-end rate, measured in the same run (µs per transcript, fastest of ``passes``).

    On ``transcripts`` events of the benchmark's kind (``transcripts // 20`` learners, so that sliding windows
    fill), in the flow's source batches: ``json_parse`` (pydantic-core's JSON parser alone, no validation: the
    floor of any decoder built on it), ``decode`` (:func:`schemas.registry.decode_event`: parse + validate the
    contract), ``score`` (:func:`flows.records.score_batch`: decode + metrics), ``submission_rows``,
    ``window_items``, and ``window_rows`` (:func:`flows.aggregate.window_rows` of every daily, weekly and sliding
    window of these transcripts, in batches of 500, per transcript; ``window_rows_per_transcript`` says how
    many). ``stages_sum_us`` adds score, rows and items: what remains of the end-to-end time per transcript is
    the engine (Kafka source, windowing operator, recovery snapshots) and the ClickHouse inserts."""
    learners = max(1, transcripts // 20)
    messages = [
        SourceMessage("bench", n % 6, n, None, value)
        for n, (_user, value) in enumerate(_transcripts(transcripts, learners, words))
    ]
    size = settings.source_batch_size
    batches = [messages[i : i + size] for i in range(0, len(messages), size)]
    threshold = settings.pause_threshold_s
    raise_young_threshold(settings.gc_young_threshold)  # as the dataflow runs (flows.dataflow.execute)

    scored = [s for batch in batches for s in score_batch(batch, pause_threshold_s=threshold) if isinstance(s, Scored)]
    if len(scored) != transcripts:
        raise RuntimeError("stage costs: a benchmark event was not scored")
    calendar = LearnerCalendar(settings.week_start)
    timezone_of = {f"bench-{n}": TIMEZONES[n % len(TIMEZONES)] for n in range(learners)}
    items = [WindowItem.of(s, timezone_of[s.user_id]) for s in scored]
    windows: dict[tuple[str, int], list[WindowItem]] = {}
    for item in items:
        for window_id in calendar.window_ids(item.local_time):
            windows.setdefault((item.user_id, window_id), []).append(item)
    closed = [
        (user_id, timezone_of[user_id], calendar.bounds(window_id), collected)
        for (user_id, window_id), collected in windows.items()
    ]
    now = datetime.now(UTC)

    def each_batch(work: Callable[[list[SourceMessage]], object]) -> None:
        for batch in batches:  # one batch's results alive at a time, as in the dataflow
            work(batch)

    def rows() -> None:
        for i in range(0, len(closed), 500):
            window_rows(closed[i : i + 500], now)

    n = transcripts
    costs = {
        "json_parse": _best_us(
            passes, lambda: each_batch(lambda b: [pydantic_core.from_json(m.value or b"") for m in b]), n
        ),
        "decode": _best_us(passes, lambda: each_batch(lambda b: [decode_event(m.value or b"") for m in b]), n),
        "score": _best_us(passes, lambda: each_batch(lambda b: score_batch(b, pause_threshold_s=threshold)), n),
        "submission_rows": _best_us(passes, lambda: [submission_row(s, now) for s in scored], n),
        "window_items": _best_us(passes, lambda: [WindowItem.of(s, timezone_of[s.user_id]) for s in scored], n),
        "window_rows": _best_us(passes, rows, n),
    }
    return {
        "transcripts": transcripts,
        "learners": learners,
        "window_rows_per_transcript": round(len(closed) / transcripts, 2),
        "us_per_transcript": costs,
        "stages_sum_us": round(
            costs["score"] + costs["submission_rows"] + costs["window_items"] + costs["window_rows"], 1
        ),
    }


def _uuid7(n: int) -> str:
    """A deterministic UUIDv7-shaped id (version 7, RFC 9562 variant) for event number ``n``."""
    value = (1_700_000_000_000 << 80) | n
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def _fresh_topics(platform: PlatformSettings, partitions: int) -> tuple[str, str]:
    name = f"bench-flows-{uuid.uuid4().hex[:8]}"
    transcripts, learners = f"{name}.transcripts", f"{name}.learners"
    ensure_topics(
        [
            TopicSpec(transcripts, "user_id", partitions, -1),
            TopicSpec(dlq_of(transcripts), "original key", 1, -1),
            TopicSpec(learners, "user_id", 1, -1),
        ],
        platform,
    )
    return transcripts, learners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transcripts", type=int, default=20_000, help="transcripts through the live flow")
    parser.add_argument("--replay-transcripts", type=int, default=100_000, help="transcripts replayed")
    parser.add_argument("--learners", type=int, default=1_000)
    parser.add_argument("--words", type=int, default=120, help="words per transcript (about a minute of speech)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--stage-transcripts",
        type=int,
        default=10_000,
        help="transcripts for the in-process stage costs (the peer of the end-to-end rate; 0 skips them)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the chDB directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-flows-"))
    os.environ["COACH_CLICKHOUSE_URL"] = f"chdb://{work / 'chdb'}"
    platform = PlatformSettings(home=work, clickhouse_url=f"chdb://{work / 'chdb'}")
    client = get_clickhouse_client(platform)
    from clickhouse import SQL_DIR
    from runtime.sql_migrations import apply_clickhouse

    apply_clickhouse(client, SQL_DIR, platform.clickhouse_database)
    result: dict[str, Any] = {
        "machine": _machine(),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.flows", *sys.argv[1:]]),
        "parameters": vars(args),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }

    if args.transcripts:
        topics = _fresh_topics(platform, args.partitions)
        produced_s = produce(platform.bootstrap_servers, topics, args.transcripts, args.learners, args.words)
        settings = FlowSettings(transcripts_topic=topics[0], learners_topic=topics[1])
        began = time.perf_counter()
        samples = _live_run(settings, platform, work / "recovery-live")
        seconds = time.perf_counter() - began
        rows = client.query("SELECT count() FROM submission_metrics").result_rows[0][0]
        windows = client.query("SELECT count() FROM learner_metrics_windows").result_rows[0][0]
        result["live"] = {
            "transcripts": args.transcripts,
            "produce_s": round(produced_s, 2),
            "seconds": round(seconds, 2),
            "transcripts_per_s_per_worker": round(args.transcripts / seconds, 1),
            **_steady_state(samples, began, args.transcripts),
            "submission_rows": rows,
            "window_rows": windows,
        }
        print(json.dumps({"live": result["live"]}), file=sys.stderr)

    if args.replay_transcripts:
        topics = _fresh_topics(platform, args.partitions)
        produced_s = produce(platform.bootstrap_servers, topics, args.replay_transcripts, args.learners, args.words)
        settings = FlowSettings(transcripts_topic=topics[0], learners_topic=topics[1])
        began = time.perf_counter()
        report = replay_metrics(1, drop_old=True, settings=settings, platform=platform)
        seconds = time.perf_counter() - began
        result["replay"] = {
            "transcripts": args.replay_transcripts,
            "produce_s": round(produced_s, 2),
            "seconds": round(seconds, 2),
            "transcripts_per_s": round(args.replay_transcripts / seconds, 1),
            "verified": report.ok,
            "swapped": report.swapped,
            "rows": report.rows,
        }
    if args.stage_transcripts:
        stages = stage_costs(args.stage_transcripts, args.words, FlowSettings())
        steady = result.get("live", {}).get("steady_transcripts_per_s_per_worker")
        if steady:
            stages["end_to_end_us_per_transcript"] = round(1e6 / steady, 1)
        stages["target_us_per_transcript"] = 200.0  # 5,000 transcripts/s per worker
        result["stage_costs"] = stages
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
