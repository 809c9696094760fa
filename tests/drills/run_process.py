"""Helpers of the process drills: ``coach run``, transcription workers and ``coach`` commands as subprocesses (the
first with a relative COACH_HOME), uploads over HTTP, a tail of a topic, and chDB reads from a process of their own.

Every process is started in its own process group (``start_new_session``) and killed with its group at the end
(:meth:`CoachRun.kill`), so a drill leaves nothing behind. The child's environment is the test session's (Kafka,
Connect and PostgreSQL ports of the session stack) minus ``COACH_CLICKHOUSE_URL``: the child then uses chDB under
its own relative ``COACH_HOME`` (the test process has the session's chDB directory open, and chDB opens one
directory per process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
from confluent_kafka import Consumer, Message, TopicPartition
from fastapi.testclient import TestClient

from runtime.settings import PlatformSettings
from schemas import SUBMISSIONS, ConsumerGroups
from stack.process import group_members, pid_alive, run_python

__all__ = [
    "REPO_ROOT",
    "CoachRun",
    "TopicTail",
    "assert_gone",
    "coach_cli",
    "coach_env",
    "committed_offsets",
    "consume_for",
    "free_ports",
    "kill_group",
    "logs_tail",
    "query_chdb",
    "start_coach",
    "transcription_workers",
    "transcripts_by_submission",
    "upload",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
RELATIVE_HOME = ".coach-drill"


def free_ports(count: int, start: int = 28000) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1, searched upwards from ``start`` (plus COACH_TEST_PORT_OFFSET % 1000,
    so that two engineers' sessions search different ranges)."""
    port = start + int(os.environ.get("COACH_TEST_PORT_OFFSET", "0")) % 1000
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                pass
            else:
                found.append(port)
        port += 1
    return found


def coach_env(ports: Mapping[str, int], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the session's, a relative COACH_HOME, its own ports, no COACH_CLICKHOUSE_URL.

    ``ports``: ``ingestion``, ``api``, ``transcription_metrics``, ``feedback_metrics``.
    """
    env = {k: v for k, v in os.environ.items() if k != "COACH_CLICKHOUSE_URL"}
    env.update(
        COACH_HOME=RELATIVE_HOME,
        COACH_INGESTION_PORT=str(ports["ingestion"]),
        COACH_API_PORT=str(ports["api"]),
        COACH_TRANSCRIPTION_WORKER_METRICS_PORT=str(ports["transcription_metrics"]),
        COACH_FEEDBACK_METRICS_PORT=str(ports["feedback_metrics"]),
        PYTHONUNBUFFERED="1",
    )
    env.pop("COACH_BLOB_URL", None)
    env.update(extra or {})
    return env


def coach_cli(
    *args: str, cwd: Path, env: Mapping[str, str], timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m coach.cli <args>`` in ``cwd`` with ``env``, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "coach.cli", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def start_coach(*args: str, env: Mapping[str, str], log: IO[bytes], cwd: Path = REPO_ROOT) -> subprocess.Popen[bytes]:
    """``python -m coach.cli <args>`` in ``cwd`` with ``env``, in a process group of its own (``start_new_session``,
    so that :func:`kill_group` takes its children too), stdout and stderr to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "coach.cli", *args],
        cwd=cwd,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of ``proc`` when ``proc`` is still running, then wait for it (10 s at most)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def logs_tail(directory: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of every ``*.log`` in ``directory`` (sorted by name), each under its name."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(directory.glob("*.log")))


@contextlib.contextmanager
def transcription_workers(log_dir: Path, **env: str) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A starter of transcription worker processes (``coach worker transcription``, one consumer process each, no
    metrics port) with this process's environment plus ``env`` (``COACH_*`` variables); the n-th logs to
    ``log_dir/worker-<n>.log``. Whatever is still running on exit is killed with its process group."""
    started: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    worker_env = dict(os.environ, COACH_TRANSCRIPTION_WORKER_METRICS_PORT="0", COACH_TRANSCRIPTION_WORKER_PROCESSES="1")
    worker_env.update(env)

    def start() -> subprocess.Popen[bytes]:
        logs.append((log_dir / f"worker-{len(started) + 1}.log").open("wb"))
        started.append(start_coach("worker", "transcription", env=worker_env, log=logs[-1]))
        return started[-1]

    try:
        yield start
    finally:
        for proc in started:
            kill_group(proc)
        for log in logs:
            log.close()


class CoachRun:
    """One ``coach run`` subprocess (own process group), its log in ``log_path``."""

    def __init__(self, cwd: Path, env: Mapping[str, str], ports: Mapping[str, int], log_path: Path) -> None:
        self.cwd, self.env, self.ports, self.log_path = cwd, dict(env), dict(ports), log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = start_coach("run", env=self.env, log=self._log, cwd=cwd)
        self.started = time.monotonic()
        self.last_readyz = ""

    @property
    def ingestion(self) -> str:
        return f"http://127.0.0.1:{self.ports['ingestion']}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """Both ``/readyz`` answer 200 (and the process is up)."""
        if not self.alive():
            return False
        for base in (self.ingestion, self.api):
            try:
                response = httpx.get(f"{base}/readyz", timeout=2)
            except httpx.HTTPError as exc:
                self.last_readyz = f"{base}/readyz: {type(exc).__name__}"
                return False
            if response.status_code != 200:
                self.last_readyz = f"{base}/readyz {response.status_code}: {response.text[:500]}"
                return False
        self.last_readyz = "200"
        return True

    def wait_ready(self, timeout_s: float = 180.0) -> float | None:
        """Seconds until both ``/readyz`` answered 200; None when the process exited or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return time.monotonic() - self.started
            if not self.alive():
                return None
            time.sleep(0.3)
        return None

    def stop(self, sig: signal.Signals, timeout_s: float = 90.0) -> int | None:
        """Send ``sig`` to the process (SIGKILL: to its whole group); returns its exit code, None if it did not
        exit within ``timeout_s`` (it is then killed)."""
        if sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the process group (whatever is left of it) and close the log."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if not self._log.closed:
            self._log.close()

    def left_behind(self) -> list[int]:
        """Live processes of its group (should be none once stopped)."""
        return group_members(self.proc.pid)

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def log_lines(self, *needles: str, limit: int = 8) -> list[str]:
        """Log lines containing any of ``needles`` (the first ``limit``)."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return [line[:400] for line in lines if any(n in line for n in needles)][:limit]
        return []


def upload(to: str | TestClient, token: str, clip: Path, *, prompt_id: str = "drill", timeout_s: float = 60) -> Any:
    """``POST /v1/submissions`` of ``clip`` with ``token`` (and a fresh Idempotency-Key) to ``to``: the ingestion
    API's base URL, or FastAPI's ``TestClient`` of the ingestion app. Returns the response (httpx's, or the test
    client's of the same interface)."""
    with clip.open("rb") as fh:
        request: dict[str, Any] = {
            "files": {"audio": (clip.name, fh, "application/octet-stream")},
            "data": {"prompt_id": prompt_id},
            "headers": {"Authorization": f"Bearer {token}", "Idempotency-Key": f"drill-{uuid.uuid4()}"},
            "timeout": timeout_s,
        }
        if isinstance(to, str):
            return httpx.post(f"{to}/v1/submissions", **request)
        return to.post("/v1/submissions", **request)


def committed_offsets(settings: PlatformSettings) -> dict[int, tuple[int, int]]:
    """``{partition: (committed offset of the transcription group, high watermark)}`` of the submissions topic
    (read without joining the group)."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": ConsumerGroups.TRANSCRIPTION})
    try:
        partitions = consumer.list_topics(SUBMISSIONS.name, timeout=10).topics[SUBMISSIONS.name].partitions
        result = {}
        for tp in consumer.committed([TopicPartition(SUBMISSIONS.name, p) for p in sorted(partitions)], timeout=10):
            _, high = consumer.get_watermark_offsets(TopicPartition(SUBMISSIONS.name, tp.partition), timeout=10)
            result[tp.partition] = (tp.offset, high)
        return result
    finally:
        consumer.close()


def transcripts_by_submission(records: Iterable[dict[str, Any]], ours: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The ``TranscriptCreated`` ``records`` of the submissions ``ours``, grouped by submission id. Asserts that every
    one of ``ours`` has one and that the copies of a submission (redelivered after a killed worker) agree: the same
    text and the same causation id."""
    by_submission: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["submission_id"] in ours:
            by_submission[record["submission_id"]].append(record)
    assert set(by_submission) == ours, f"no transcript of {sorted(ours - set(by_submission))}"
    for submission_id, copies in by_submission.items():
        texts = {c["payload"]["text"] for c in copies}
        assert len(texts) == 1, f"{submission_id}: duplicates disagree: {texts}"
        assert len({c["causation_id"] for c in copies}) == 1, f"{submission_id}: duplicates of different causes"
    return by_submission


def assert_gone(*procs: subprocess.Popen[bytes]) -> None:
    """Asserts that every one of ``procs`` has exited and left no process in its process group."""
    for proc in procs:
        assert not pid_alive(proc.pid), f"process {proc.pid} still runs"
        assert group_members(proc.pid) == [], f"processes left in the group of {proc.pid}"


def consume_for(consumer: Consumer, seconds: float, poll_s: float = 0.05) -> Iterator[Message]:
    """The messages ``consumer`` receives within ``seconds`` (polled every ``poll_s`` at most), error events
    left out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = consumer.poll(poll_s)
        if msg is not None and msg.error() is None:
            yield msg


class TopicTail:
    """Follows topics from their current ends (only records produced after construction), JSON values parsed."""

    def __init__(self, bootstrap: str, topics: Iterable[str], *, from_beginning: bool = False) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"drill-tail-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            }
        )
        assignment = []
        for topic in topics:
            partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            for partition in sorted(partitions):
                low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                assignment.append(TopicPartition(topic, partition, low if from_beginning else high))
        self.consumer.assign(assignment)
        self.records: list[dict[str, Any]] = []

    def poll(self, seconds: float) -> None:
        """Collect what arrives within ``seconds``."""
        for msg in consume_for(self.consumer, seconds):
            try:
                value = json.loads(msg.value())
            except (ValueError, TypeError, RecursionError):
                value = None
            if not isinstance(value, dict):
                value = {"_raw": msg.value()}
            value["_topic"], value["_partition"], value["_offset"] = msg.topic(), msg.partition(), msg.offset()
            self.records.append(value)

    def poll_until(self, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float) -> bool:
        """Poll until ``done(records)``; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                return False
            self.poll(0.2)
        return True

    def close(self) -> None:
        self.consumer.close()


_CHDB_QUERY = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1])
rows = client.query(sys.argv[2]).result_rows
print(json.dumps([[str(v) for v in row] for row in rows]))
"""


def query_chdb(directory: Path, sql: str, timeout_s: float = 120) -> list[list[str]]:
    """Run ``sql`` on the chDB data directory ``directory`` in a process of its own (the test process has the
    session's chDB open); values come back as strings. Only while no other process has the directory open."""
    out = run_python("-c", _CHDB_QUERY, f"chdb://{directory.resolve()}", sql, what="chDB query", timeout_s=timeout_s)
    return json.loads(out.strip().splitlines()[-1])
