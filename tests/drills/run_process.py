"""Helpers of the process drills: ``coach run`` and ``coach`` commands as subprocesses with a relative COACH_HOME,
uploads over HTTP, a tail of a topic, and chDB reads from a process of their own.

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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from stack.process import group_members

__all__ = [
    "REPO_ROOT",
    "CoachRun",
    "TopicTail",
    "coach_cli",
    "coach_env",
    "free_ports",
    "query_chdb",
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


class CoachRun:
    """One ``coach run`` subprocess (own process group), its log in ``log_path``."""

    def __init__(self, cwd: Path, env: Mapping[str, str], ports: Mapping[str, int], log_path: Path) -> None:
        self.cwd, self.env, self.ports, self.log_path = cwd, dict(env), dict(ports), log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coach.cli", "run"],
            cwd=cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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


def upload(base: str, token: str, clip: Path, *, prompt_id: str = "drill", timeout_s: float = 60) -> httpx.Response:
    """``POST /v1/submissions`` of ``clip`` with ``token``."""
    with clip.open("rb") as fh:
        return httpx.post(
            f"{base}/v1/submissions",
            files={"audio": (clip.name, fh, "application/octet-stream")},
            data={"prompt_id": prompt_id},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"drill-{uuid.uuid4()}"},
            timeout=timeout_s,
        )


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
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
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
    done = subprocess.run(
        [sys.executable, "-c", _CHDB_QUERY, f"chdb://{directory.resolve()}", sql],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"chDB query failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
