"""Load and soak benchmark of the whole platform: a steady arrival rate of uploads through every service.

Usage (bootstrapped checkout; it starts and stops a stack of its own)::

    .venv/bin/python -m bench.e2e [--rate 0.25] [--duration 300] [--learners 12] [--poison-every 25]
                                  [--drain-timeout 600] [--out bench-e2e.json] [--no-write]

What it does:

1. starts its own local stack (``python -m stack up``, then ``coach migrate``) under ``COACH_E2E_HOME`` (default
   ``.coach-e2ebench``) on ports of its own (``COACH_E2E_*`` below), so it touches neither a developer's stack,
   the tests' nor the other benchmarks';
2. creates ``--learners`` learners in six timezones (PostgreSQL ``learners`` table, captured by Debezium) with a key
   each, and a pool of recordings: the JFK clip and espeak-ng answers of 3 to 20 s at 130 to 190 words/min
   (:mod:`bench.clips`), plus 3 s of silence as the poison upload;
3. starts every service of the local mode as one process (``coach run``: ingestion API, transcription worker,
   projector, feedback worker (rules provider), metric and observability dataflows, lag sampler, progress API),
   exactly as a user runs it, and waits until both HTTP APIs are ready;
4. uploads at a steady arrival rate (``--rate`` uploads/s, one every ``1/rate`` s on a fixed schedule, each upload
   in its own thread so a slow answer does not shift the schedule) for ``--duration`` seconds, rotating over the
   learners and the clips, ``recorded_at`` = now; every ``--poison-every``-th upload is the silent clip, which the
   ingestion API accepts (it is valid audio) and the transcription worker must dead-letter ("no speech");
5. meanwhile: a Kafka consumer (its own group) notes the broker timestamp of each submission's
   ``TranscriptCreated`` and ``FeedbackCreated`` event and of each dead letter; a poller asks the progress API
   ``GET /v1/submissions/{id}`` (the learner's own token) every ``--poll-s`` seconds until the submission's
   metrics are there; a sampler records every 2 s the consumer lag of the Kafka consumer groups (committed offset
   vs high watermark), the projector's lag (its offsets in PostgreSQL vs high watermarks), and the memory (PSS from
   ``/proc/<pid>/smaps_rollup``) of ``coach run`` and of each engine's process tree;
6. after the last upload, waits (at most ``--drain-timeout``) until every accepted upload has its metrics in the API
   or its dead letter, then reads ``coach run``'s peak RSS (``VmHWM``), stops it with SIGTERM and stops the stack;
7. reports throughput, end-to-end latency percentiles (upload sent → metrics visible in the API; with the per
   stage times: 202, transcript event, feedback event), consumer lag, DLQ count, peak memory and lost uploads
   (accepted but neither visible nor dead-lettered), writes the ``## End to end`` section of
   ``bench/RESULTS.md`` and prints the raw results as JSON. Exit code 1 when any accepted upload was lost.

The latency includes up to ``--poll-s`` of polling granularity. Event timestamps are the broker's ``CreateTime``
(set by the producing service), on the same clock as this process (one machine).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bench.clips import AUDIO_FIXTURES, SENTENCES, SYNTH_PLAN, decoded_duration_s, synthesize
from bench.host import loadavg, machine, proc_status_kib, replace_section
from bench.own_stack import OwnStackSettings, use_stack_env

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO_ROOT / "bench" / "RESULTS.md"
SECTION = "## End to end"
COACH = [sys.executable, "-m", "coach.cli"]
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo")
ANSWER_MAX_S = 24
"""Longest synthesized answer of the upload pool (target seconds)."""
ANSWERS: tuple[tuple[float, int, int], ...] = tuple(plan for plan in SYNTH_PLAN if plan[0] <= ANSWER_MAX_S)
"""(target seconds, words per minute, first sentence) of the synthesized answers: the clips of
:data:`bench.clips.SYNTH_PLAN` (the transcription benchmark's) of at most :data:`ANSWER_MAX_S`."""


class E2EBenchSettings(OwnStackSettings):
    """Where the benchmark's own stack and services listen (``COACH_E2E_*``); frozen. The stack's ports are the
    developer's + 20200 (29292, 29293, 28283, 25633), the services' too (28200, 28201): none ends like the
    developer's (9092, 8083, 5433, 8000, 8001), the tests' or the other benchmarks' schemes."""

    model_config = SettingsConfigDict(env_prefix="COACH_E2E_")
    PORT_OFFSET = 20200

    home: Path = Field(default=REPO_ROOT / ".coach-e2ebench", description="COACH_E2E_HOME: state of the bench stack")
    ingestion_port: int = Field(default=28200, description="COACH_E2E_INGESTION_PORT: ingestion API port")
    api_port: int = Field(default=28201, description="COACH_E2E_API_PORT: progress API port")

    def env(self) -> dict[str, str]:
        """The ``COACH_*`` variables that point the stack CLI and every service at the bench stack."""
        return {
            **self.stack_env(),
            "COACH_INGESTION_PORT": str(self.ingestion_port),
            "COACH_API_PORT": str(self.api_port),
            "COACH_TRANSCRIPTION_WORKER_METRICS_PORT": "0",
            "COACH_FEEDBACK_METRICS_PORT": "0",
            "COACH_FEEDBACK_PROVIDERS": "rules",
        }


@dataclass(frozen=True)
class Recording:
    """One file of the upload pool: ``kind`` is ``"speech"`` or ``"poison"``; ``duration_s`` decoded seconds."""

    name: str
    path: Path
    duration_s: float
    kind: str


@dataclass
class Upload:
    """One upload and what became of it; times are ``time.time()`` seconds (the broker's clock on this machine)."""

    index: int
    user_id: str
    recording: str
    kind: str
    audio_s: float
    scheduled: float
    sent: float = math.nan
    answered: float = math.nan
    status: int = 0
    submission_id: str | None = None
    transcript: float = math.nan
    feedback: float = math.nan
    visible: float = math.nan
    dead_letter: float = math.nan
    dead_letter_reason: str | None = None


@dataclass
class Samples:
    """Time series taken every couple of seconds: ``lag`` rows ``(t, group, lag)``, ``memory`` rows
    ``(t, {process: PSS MiB})``, ``load`` rows ``(t, 1-min load)``."""

    lag: list[tuple[float, str, int]] = field(default_factory=list)
    memory: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    load: list[tuple[float, float]] = field(default_factory=list)


# --------------------------------------------------------------------------- set-up


def build_pool(directory: Path) -> list[Recording]:
    """The JFK clip, the espeak-ng answers of :data:`ANSWERS` and 3 s of silence (the poison), written to
    ``directory``. Raises ``FileNotFoundError`` without espeak-ng."""
    directory.mkdir(parents=True, exist_ok=True)
    jfk = AUDIO_FIXTURES / "jfk.flac"
    pool = [Recording("jfk", jfk, decoded_duration_s(jfk), "speech")]
    for target, wpm, first in ANSWERS:
        path = directory / f"answer-{target:g}s-{wpm}wpm.wav"
        if not path.exists():
            synthesize(target, wpm, first % len(SENTENCES), path)
        pool.append(Recording(path.stem, path, decoded_duration_s(path), "speech"))
    silence = directory / "silence-3s.wav"
    with wave.open(str(silence), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x00" * 16000 * 3)
    pool.append(Recording("silence", silence, 3.0, "poison"))
    return pool


def create_learners(count: int, run_id: str) -> dict[str, str]:
    """``{user_id: bearer token}`` of ``count`` new learners in :data:`TIMEZONES` (cohort ``e2e-<run_id>``)."""
    import psycopg

    from runtime.principals import create_api_key
    from runtime.settings import PlatformSettings

    tokens = {}
    with psycopg.connect(PlatformSettings().postgres_dsn, autocommit=True) as conn:
        for i in range(count):
            user_id = f"e2e-{run_id}-{i:03d}"
            conn.execute(
                "INSERT INTO learners (user_id, display_name, timezone, target_level, cohort)"
                " VALUES (%s, %s, %s, %s, %s)",
                (user_id, f"E2E learner {i}", TIMEZONES[i % len(TIMEZONES)], "B2", f"e2e-{run_id}"),
            )
            tokens[user_id] = create_api_key(conn, user_id, "learner")
    return tokens


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, check=False, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SystemExit(f"e2e bench: {what} failed (exit {result.returncode}); see the output above")


def _await_ready(url: str, service: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"e2e bench: `coach run` exited with {service.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"e2e bench: {url} not ready after {timeout_s:.0f} s")


# --------------------------------------------------------------------------- observers


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (``/proc/<pid>/task/*/children``)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return out


def pss_mib(pid: int) -> float:
    """Proportional set size of ``pid`` and its descendants in MiB (shared pages split between sharers, so the sum
    over a process tree such as PostgreSQL's counts its shared buffers once); 0 when gone."""
    total_kib = 0
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
                    break
        except OSError:
            continue
    return round(total_kib / 1024, 1)


class Observer:
    """Background threads: broker timestamps of events per submission, API visibility, lag/memory samples."""

    def __init__(
        self,
        uploads: dict[str, Upload],
        tokens: dict[str, str],
        api_base: str,
        processes: dict[str, int],
        poll_s: float,
    ) -> None:
        self.uploads = uploads
        self.tokens = tokens
        self.api_base = api_base
        self.processes = processes
        self.poll_s = poll_s
        self.samples = Samples()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._events, name="events", daemon=True),
            threading.Thread(target=self._visibility, name="visibility", daemon=True),
            threading.Thread(target=self._sampler, name="sampler", daemon=True),
        ]
        self.errors: list[str] = []

    def start(self) -> None:
        """Start the threads."""
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        """Stop and join the threads."""
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _by_id(self, sid: str | None) -> Upload | None:
        with self.lock:
            return self.uploads.get(sid) if sid else None

    def _events(self) -> None:
        from confluent_kafka import Consumer

        from runtime.settings import PlatformSettings
        from schemas import FEEDBACK, TRANSCRIPTS
        from schemas.topics import FEEDBACK_DLQ, SUBMISSIONS_DLQ, TRANSCRIPTS_DLQ

        consumer = Consumer(
            {
                "bootstrap.servers": PlatformSettings().bootstrap_servers,
                "group.id": f"bench-e2e-{uuid.uuid4()}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe(
            [TRANSCRIPTS.name, FEEDBACK.name, *(t.name for t in (SUBMISSIONS_DLQ, TRANSCRIPTS_DLQ, FEEDBACK_DLQ))]
        )
        try:
            while not self.stop.is_set():
                for msg in consumer.consume(500, 0.5):
                    if msg.error():
                        continue
                    try:
                        event = json.loads(msg.value() or b"{}")
                    except ValueError:
                        continue
                    upload = self._by_id(event.get("submission_id") if isinstance(event, dict) else None)
                    if upload is None:
                        continue
                    stamp = msg.timestamp()[1] / 1000
                    topic = msg.topic()
                    with self.lock:
                        if topic == TRANSCRIPTS.name:
                            upload.transcript = stamp
                        elif topic == FEEDBACK.name:
                            upload.feedback = stamp
                        else:
                            upload.dead_letter = stamp
                            upload.dead_letter_reason = f"{event.get('error_class')}: {event.get('reason')}"
        except Exception as exc:  # noqa: BLE001 - reported with the results
            self.errors.append(f"event reader: {exc!r}")
        finally:
            consumer.close()

    def _visibility(self) -> None:
        with httpx.Client(base_url=self.api_base, timeout=30) as client:
            while not self.stop.is_set():
                with self.lock:
                    pending = [
                        u
                        for u in self.uploads.values()
                        if math.isnan(u.visible) and u.kind == "speech" and u.submission_id
                    ]
                for upload in pending:
                    try:
                        r = client.get(
                            f"/v1/submissions/{upload.submission_id}",
                            headers={"Authorization": f"Bearer {self.tokens[upload.user_id]}"},
                        )
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 200 and r.json().get("metrics"):
                        seen = time.time()
                        with self.lock:
                            upload.visible = seen
                self.stop.wait(self.poll_s)

    def _sampler(self) -> None:
        import psycopg
        from confluent_kafka import Consumer, TopicPartition

        from runtime.settings import PlatformSettings
        from schemas import SUBMISSIONS, TRANSCRIPTS
        from schemas.topics import ConsumerGroups

        settings = PlatformSettings()
        groups = {ConsumerGroups.TRANSCRIPTION: SUBMISSIONS.name, ConsumerGroups.FEEDBACK: TRANSCRIPTS.name}
        consumers = {
            group: Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group}) for group in groups
        }
        watcher = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"bench-e2e-{uuid.uuid4()}"})

        def high(topic: str, partition: int) -> int:
            return int(watcher.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)[1])

        try:
            with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    now = time.time()
                    try:
                        for group, topic in groups.items():
                            parts = watcher.list_topics(topic, timeout=5).topics[topic].partitions
                            committed = consumers[group].committed([TopicPartition(topic, p) for p in parts], timeout=5)
                            lag = sum(high(topic, tp.partition) - max(tp.offset, 0) for tp in committed)
                            self.samples.lag.append((now, group, lag))
                        rows = conn.execute(
                            "SELECT topic, partition, next_offset FROM projection_offsets WHERE consumer_group = %s",
                            (ConsumerGroups.PROJECTOR,),
                        ).fetchall()
                        lag = sum(max(0, high(topic, part) - next_offset) for topic, part, next_offset in rows)
                        self.samples.lag.append((now, ConsumerGroups.PROJECTOR, lag))
                    except Exception as exc:  # noqa: BLE001 - a missed sample is noted, not fatal
                        self.errors.append(f"lag sample: {exc!r}")
                    self.samples.memory.append((now, {name: pss_mib(pid) for name, pid in self.processes.items()}))
                    self.samples.load.append((now, loadavg()[0]))
                    self.stop.wait(2.0)
        finally:
            for consumer in (*consumers.values(), watcher):
                consumer.close()


# --------------------------------------------------------------------------- load


def upload_one(client: httpx.Client, upload: Upload, recording: Recording, token: str) -> None:
    """POST one recording; fills ``sent``, ``answered``, ``status`` and ``submission_id`` of ``upload``."""
    upload.sent = time.time()
    try:
        with recording.path.open("rb") as fh:
            r = client.post(
                "/v1/submissions",
                files={"audio": (recording.path.name, fh)},
                data={"prompt_id": f"e2e-{recording.name}", "recorded_at": datetime.now(UTC).isoformat()},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"e2e-{uuid.uuid4()}"},
            )
        upload.status = r.status_code
        if r.status_code == 202:
            upload.submission_id = r.json()["submission_id"]
    except httpx.HTTPError as exc:
        upload.status = -1
        upload.dead_letter_reason = f"upload failed: {exc!r}"
    upload.answered = time.time()


def drive(
    base: str,
    tokens: dict[str, str],
    pool: list[Recording],
    uploads: dict[str, Upload],
    lock: threading.Lock,
    *,
    rate: float,
    duration_s: float,
    poison_every: int,
) -> list[Upload]:
    """Upload at ``rate`` per second for ``duration_s`` seconds on a fixed schedule; returns every upload in order.
    Accepted ones are added to ``uploads`` (by submission id) as soon as their 202 arrives."""
    speech = [r for r in pool if r.kind == "speech"]
    poison = next(r for r in pool if r.kind == "poison")
    users = list(tokens)
    count = max(1, int(rate * duration_s))
    start = time.time() + 1.0
    done: list[Upload] = []

    def one(i: int) -> None:
        recording = poison if poison_every and (i + 1) % poison_every == 0 else speech[i % len(speech)]
        user = users[i % len(users)]
        upload = Upload(i, user, recording.name, recording.kind, recording.duration_s, start + i / rate)
        upload_one(client, upload, recording, tokens[user])
        with lock:
            done.append(upload)
            if upload.submission_id:
                uploads[upload.submission_id] = upload

    with httpx.Client(base_url=base, timeout=120) as client, ThreadPoolExecutor(max_workers=16) as pool_exec:
        for i in range(count):
            delay = start + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            pool_exec.submit(one, i)
            if (i + 1) % max(1, int(rate * 30)) == 0:
                with lock:
                    finished = sum(1 for u in uploads.values() if not math.isnan(u.visible))
                print(f"  {i + 1}/{count} uploads sent, {finished} visible in the API", flush=True)
    return sorted(done, key=lambda u: u.index)


# --------------------------------------------------------------------------- results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def latency_stats(values: list[float]) -> dict[str, float]:
    """p50/p90/p95/p99/max/mean of ``values`` (seconds), nearest-rank percentiles."""
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(_pct(values, 50), 2),
        "p90": round(_pct(values, 90), 2),
        "p95": round(_pct(values, 95), 2),
        "p99": round(_pct(values, 99), 2),
        "max": round(max(values), 2),
        "mean": round(statistics.fmean(values), 2),
    }


def summarise(uploads: list[Upload], samples: Samples, peaks: dict[str, float]) -> dict[str, Any]:
    """The numbers of the report from the raw uploads and samples."""
    accepted = [u for u in uploads if u.status == 202]
    speech = [u for u in accepted if u.kind == "speech"]
    poison = [u for u in accepted if u.kind == "poison"]
    visible = [u for u in speech if not math.isnan(u.visible)]
    dead = [u for u in accepted if not math.isnan(u.dead_letter)]
    lost = [u for u in accepted if math.isnan(u.visible) and math.isnan(u.dead_letter)]
    first = min(u.sent for u in uploads)
    last_upload = max(u.sent for u in uploads)
    ends = [u.visible for u in visible] + [u.dead_letter for u in dead]
    last_done = max(ends) if ends else math.nan
    lag: dict[str, dict[str, float]] = {}
    for group in sorted({g for _, g, _ in samples.lag}):
        values = [v for _, g, v in samples.lag if g == group]
        lag[group] = {"max": max(values), "mean": round(statistics.fmean(values), 1), "last": values[-1]}
    memory_peak: dict[str, float] = {}
    for _, row in samples.memory:
        for name, mib in row.items():
            memory_peak[name] = max(memory_peak.get(name, 0.0), mib)
    total_peak = max((sum(row.values()) for _, row in samples.memory), default=0.0)
    return {
        "uploads": len(uploads),
        "accepted": len(accepted),
        "rejected": {
            str(u.status): sum(1 for v in uploads if v.status == u.status) for u in uploads if u.status != 202
        },
        "speech_accepted": len(speech),
        "poison_accepted": len(poison),
        "visible_in_api": len(visible),
        "dead_lettered": len(dead),
        "dead_letter_reasons": sorted({u.dead_letter_reason or "" for u in dead}),
        "speech_dead_lettered": sum(1 for u in speech if not math.isnan(u.dead_letter)),
        "lost": len(lost),
        "lost_ids": [u.submission_id for u in lost],
        "offered_rate_per_s": round(len(uploads) / max(1e-9, last_upload - first), 3),
        "completed_per_s": round((len(visible) + len(dead)) / max(1e-9, last_done - first), 3),
        "audio_s_per_s": round(sum(u.audio_s for u in visible) / max(1e-9, last_done - first), 2),
        "audio_s_total": round(sum(u.audio_s for u in visible), 1),
        "drain_s": round(last_done - last_upload, 1),
        "latency_s": {
            "accepted (202)": latency_stats([u.answered - u.sent for u in accepted]),
            "transcript event": latency_stats([u.transcript - u.sent for u in speech if not math.isnan(u.transcript)]),
            "feedback event": latency_stats([u.feedback - u.sent for u in speech if not math.isnan(u.feedback)]),
            "metrics visible in API": latency_stats([u.visible - u.sent for u in visible]),
            "dead letter (poison)": latency_stats(
                [u.dead_letter - u.sent for u in poison if not math.isnan(u.dead_letter)]
            ),
        },
        "consumer_lag_messages": lag,
        "memory_peak_pss_mib": memory_peak,
        "memory_peak_pss_total_mib": round(total_peak, 1),
        "coach_run_vmhwm_mib": peaks.get("coach run"),
        "load_1min": {
            "start": samples.load[0][1] if samples.load else None,
            "max": max((v for _, v in samples.load), default=None),
            "mean": round(statistics.fmean(v for _, v in samples.load), 2) if samples.load else None,
        },
    }


def versions() -> dict[str, str]:
    """Python and the main libraries of the path an upload takes."""
    import platform

    out = {"python": platform.python_version()}
    for dist in ("faster-whisper", "ctranslate2", "bytewax", "chdb", "clickhouse-connect", "fastapi", "uvicorn",
                 "confluent-kafka", "psycopg"):  # fmt: skip
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def render(r: dict[str, Any]) -> str:
    """Markdown of the results (the ``## End to end`` section)."""
    s, m, v, a = r["summary"], r["machine"], r["versions"], r["args"]
    lines = [
        SECTION,
        "",
        f"Whole platform under a steady arrival rate (bench/e2e.py), recorded {r['finished_at']}.",
        "",
        f"**Nothing lost: {'yes' if s['lost'] == 0 else 'NO'}** — {s['accepted']} uploads accepted (202) of "
        f"{s['uploads']} sent; {s['visible_in_api']} speech uploads with metrics visible in the progress API, "
        f"{s['dead_lettered']} dead-lettered ({s['poison_accepted']} poison uploads of silence sent on purpose, "
        f"{s['speech_dead_lettered']} speech uploads dead-lettered), **{s['lost']} lost**.",
        "",
        f"- Machine: {m['cpu']}, {m['cores_usable']} cores, {m['ram_gib']} GiB RAM, no GPU; {m['os']}. Shared with "
        f"other engineers' jobs: 1-min load {s['load_1min']['start']} at start, mean {s['load_1min']['mean']}, max "
        f"{s['load_1min']['max']} during the run.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + f", Apache Kafka {r['kafka']}.",
        f"- Command: `{r['command']}` (a stack of its own under `{r['home']}`, stopped at the end).",
        f"- Topology: the local mode as users run it — one `coach run` process (ingestion API, transcription worker "
        f"(faster-whisper tiny.en, CPU int8), projector, feedback worker with the rules provider, metric and "
        f"observability dataflows (Bytewax), lag sampler, progress API over embedded chDB) + Kafka broker, Kafka "
        f"Connect with Debezium, PostgreSQL; all on the same {m['cores_usable']} cores.",
        f"- Load: one upload every {1 / a['rate']:.1f} s for {a['duration']:.0f} s, rotating over {a['learners']} "
        f"learners (6 timezones) and {r['pool']['speech']} recordings (JFK + espeak-ng answers, "
        f"{r['pool']['min_s']:.1f}–{r['pool']['max_s']:.1f} s, mean {r['pool']['mean_s']:.1f} s), every "
        f"{a['poison_every']}th upload 3 s of silence; API polled every {a['poll_s']} s.",
        "",
        "| throughput | value |",
        "| --- | ---: |",
        f"| offered arrival rate (uploads/s) | {s['offered_rate_per_s']} |",
        f"| completed (visible or dead-lettered) per s, first upload → last completion | {s['completed_per_s']} |",
        f"| audio seconds per second (visible uploads) | {s['audio_s_per_s']} |",
        f"| drain after the last upload (s) | {s['drain_s']} |",
        "",
        "Latency from sending the upload (s):",
        "",
        "| stage | n | p50 | p90 | p95 | p99 | max | mean |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stage, st in s["latency_s"].items():
        if st:
            lines.append(
                f"| {stage} | {st['n']} | {st['p50']} | {st['p90']} | {st['p95']} | {st['p99']} | {st['max']} | "
                f"{st['mean']} |"
            )
    lines += ["", "Consumer lag (messages behind the high watermark, sampled every 2 s):", ""]
    lines += ["| consumer group | max | mean | at the end |", "| --- | ---: | ---: | ---: |"]
    for group, st in s["consumer_lag_messages"].items():
        lines.append(f"| {group} | {st['max']} | {st['mean']} | {st['last']} |")
    lines += ["", "Peak memory (PSS of each process tree, sampled every 2 s):", ""]
    lines += ["| process | peak PSS MiB |", "| --- | ---: |"]
    for name, mib in s["memory_peak_pss_mib"].items():
        lines.append(f"| {name} | {mib} |")
    lines.append(f"| all together (peak of the sum) | {s['memory_peak_pss_total_mib']} |")
    lines += ["", f"`coach run` peak RSS (`VmHWM`): {s['coach_run_vmhwm_mib']} MiB."]
    if s["dead_letter_reasons"]:
        lines += ["", "Dead-letter causes: " + "; ".join(f"`{x}`" for x in s["dead_letter_reasons"]) + "."]
    others = r.get("other_runs") or []
    if others:
        lines += [
            "",
            "Other arrival rates (same benchmark, other runs; latency = upload sent → metrics visible in the API):",
            "",
            "| command | accepted | lost | completed/s | audio s/s | p50 s | p95 s | p99 s | max lag (transcription) "
            "| peak PSS MiB (all) | load mean |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for o in others:
            so = o["summary"]
            vis = so["latency_s"].get("metrics visible in API") or {}
            lag = so["consumer_lag_messages"].get("transcription", {}).get("max", "–")
            lines.append(
                f"| `{o['command']}` | {so['accepted']} | {so['lost']} | {so['completed_per_s']} | "
                f"{so['audio_s_per_s']} | {vis.get('p50', '–')} | {vis.get('p95', '–')} | {vis.get('p99', '–')} | "
                f"{lag} | {so['memory_peak_pss_total_mib']} | {so['load_1min']['mean']} |"
            )
    if r.get("notes"):
        lines += ["", *r["notes"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _without_nan(value: Any) -> Any:
    """``value`` with every NaN float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nan(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (1 when an accepted upload was lost)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=0.25, help="uploads per second (steady)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of arrivals")
    parser.add_argument("--learners", type=int, default=12)
    parser.add_argument("--poison-every", type=int, default=25, help="every Nth upload is silence (0 = none)")
    parser.add_argument("--poll-s", type=float, default=0.5, help="API polling interval")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--keep-stack", action="store_true", help="leave the bench stack running")
    parser.add_argument("--out", type=Path, help="write the raw results as JSON here")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS_MD.name}")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="re-render the section from runs' --out files (the first in full, the others as rows) and exit",
    )
    parser.add_argument("--notes", type=Path, help="with --from-json: a Markdown file appended to the section")
    args = parser.parse_args(argv)
    if args.from_json:
        runs = [json.loads(path.read_text()) for path in args.from_json]
        notes = args.notes.read_text().strip().splitlines() if args.notes else []
        replace_section(RESULTS_MD, SECTION, render({**runs[0], "other_runs": runs[1:], "notes": notes}))
        print(f"wrote the {SECTION!r} section of {RESULTS_MD} from {len(runs)} run(s)")
        return 0

    bench = E2EBenchSettings()
    use_stack_env(bench.env())
    command = "python -m bench.e2e " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"e2e bench: stack under {bench.home}", flush=True)
    _run([sys.executable, "-m", "stack", "up"], "`coach stack up`")
    service: subprocess.Popen[bytes] | None = None
    observer: Observer | None = None
    try:
        _run([*COACH, "migrate"], "`coach migrate`")
        run_id = uuid.uuid4().hex[:6]
        tokens = create_learners(args.learners, run_id)
        pool = build_pool(bench.home / "e2e-clips")
        log_path = bench.home / "logs" / "e2e-coach-run.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            service = subprocess.Popen([*COACH, "run"], cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        ingestion = f"http://127.0.0.1:{bench.ingestion_port}"
        api = f"http://127.0.0.1:{bench.api_port}"
        _await_ready(f"{ingestion}/readyz", service)
        _await_ready(f"{api}/readyz", service)
        from stack.settings import StackSettings
        from stack.supervisor import Supervisor

        processes = {"coach run": service.pid, **Supervisor(StackSettings()).pid_file_pids()}
        uploads: dict[str, Upload] = {}
        observer = Observer(uploads, tokens, api, processes, args.poll_s)
        observer.start()
        time.sleep(3)  # the event reader's group joins before the first upload
        print(f"e2e bench: {args.rate}/s for {args.duration:.0f} s, log of the services: {log_path}", flush=True)
        started = datetime.now(UTC)
        done = drive(
            ingestion,
            tokens,
            pool,
            uploads,
            observer.lock,
            rate=args.rate,
            duration_s=args.duration,
            poison_every=args.poison_every,
        )
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            with observer.lock:
                open_ = [u for u in uploads.values() if math.isnan(u.visible) and math.isnan(u.dead_letter)]
            if not open_:
                break
            if service.poll() is not None:
                print(f"e2e bench: `coach run` exited with {service.returncode}; see {log_path}", flush=True)
                break
            time.sleep(1)
        time.sleep(2 * args.poll_s)
        peaks = {"coach run": round((proc_status_kib(service.pid, "VmHWM") or 0) / 1024, 1)}
        observer.close()
        from bench.transcription import versions as stack_versions

        speech = [r for r in pool if r.kind == "speech"]
        results: dict[str, Any] = {
            "command": command,
            "home": str(bench.home.relative_to(REPO_ROOT) if bench.home.is_relative_to(REPO_ROOT) else bench.home),
            "args": {k: (str(val) if isinstance(val, Path) else val) for k, val in vars(args).items()},
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "versions": versions(),
            "kafka": stack_versions().get("kafka", "unknown"),
            "pool": {
                "speech": len(speech),
                "min_s": min(r.duration_s for r in speech),
                "max_s": max(r.duration_s for r in speech),
                "mean_s": statistics.fmean(r.duration_s for r in speech),
            },
            "summary": summarise(done, observer.samples, peaks),
            "observer_errors": observer.errors[:20],
            "uploads": [asdict(u) for u in done],
        }
    finally:
        if observer is not None:
            observer.close()
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(90)
            except subprocess.TimeoutExpired:
                service.kill()
        if not args.keep_stack:
            subprocess.run([sys.executable, "-m", "stack", "down"], check=False, cwd=REPO_ROOT)
    text = json.dumps(_without_nan(results), indent=2)
    if args.out:
        args.out.write_text(text)
    print(json.dumps(results["summary"], indent=2))
    if results["observer_errors"]:
        print("observer errors:", results["observer_errors"])
    if not args.no_write:
        replace_section(RESULTS_MD, SECTION, render(results))
        print(f"wrote the {SECTION!r} section of {RESULTS_MD}")
    return 1 if results["summary"]["lost"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
