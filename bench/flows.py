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
3. **replay**: ``replay_metrics`` (verification and swap included) over ``--replay-transcripts`` transcripts.

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
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.host import machine
from flows.dataflow import FlowStats, run_metrics_flow
from flows.replay import replay_metrics
from flows.settings import FlowSettings
from flows.synthetic import synthetic_transcript
from runtime.clickhouse import get_clickhouse_client
from runtime.kafka import ensure_topics
from runtime.settings import PlatformSettings
from schemas.registry import encode_event
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
        while True:
            try:
                producer.produce(transcripts_topic, key=user.encode(), value=value.encode())
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
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
