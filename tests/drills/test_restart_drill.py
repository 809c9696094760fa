"""Restart drill: ten consecutive starts of ``coach run`` on a relative COACH_HOME, each stopped at a varied moment,
then one clean start that drains everything; nothing is lost and nothing is counted twice.

``coach run`` runs as a subprocess (its own process group) with ``cwd`` a temporary directory and
``COACH_HOME=.coach-drill`` (relative), its own ports (ingestion, progress API, transcription and feedback
``/metrics``), no ``COACH_CLICKHOUSE_URL`` (so chDB lives under the relative home), flow snapshots every second
(``COACH_FLOWS_EPOCH_INTERVAL_S=1``) and batches of two messages. The stop moments cycle through:

* ``idle``: ready, nothing uploaded in this start;
* ``mid-batch``: three clips uploaded, stopped as soon as the first of their transcripts is on
  ``speech.transcripts.v1`` (the rest of the batch is being sent or the next one transcribed);
* ``snapshot``: one clip uploaded and transcribed, stopped on the first write to the Bytewax recovery database
  (``<home>/flows/recovery``) seen after that;
* ``insert``: one clip uploaded and transcribed, stopped when a new entry appears in the chDB data directory (a
  ``tmp_insert_*`` part being written, or the part it became);

alternately by SIGTERM (must exit 0) and SIGKILL (the whole process group). Every start must become ready (both
``/readyz`` answer 200) and must not end by itself. After the last (clean) start drained everything, every
accepted upload (202) has exactly one transcript and one feedback in the PostgreSQL read models, its metrics in the
progress API, and exactly one row in ClickHouse ``submission_metrics FINAL`` (read from the child's chDB directory
after it exited). The drill prints a table of starts tried / ready and how each ended; no timing is asserted.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from runtime.principals import create_api_key
from runtime.settings import PlatformSettings
from schemas import TRANSCRIPTS
from tests.audio_factory import HOTWORDS, JFK
from tests.drills.run_process import (
    RELATIVE_HOME,
    CoachRun,
    TopicTail,
    coach_cli,
    coach_env,
    free_ports,
    query_chdb,
    upload,
)

pytestmark = pytest.mark.drill

#: (moment, signal) of the ten interrupted starts; an eleventh, clean start drains everything.
SCHEDULE: list[tuple[str, signal.Signals]] = [
    ("idle", signal.SIGTERM),
    ("mid-batch", signal.SIGKILL),
    ("snapshot", signal.SIGTERM),
    ("insert", signal.SIGKILL),
    ("mid-batch", signal.SIGTERM),
    ("snapshot", signal.SIGKILL),
    ("insert", signal.SIGTERM),
    ("idle", signal.SIGKILL),
    ("mid-batch", signal.SIGKILL),
    ("insert", signal.SIGKILL),
]
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 300.0
SIGTERM_EXIT_S = 90.0


@dataclass
class Start:
    number: int
    moment: str
    sig: str
    ready_s: float | None = None
    uploads: int = 0
    upload_errors: list[str] = field(default_factory=list)
    moment_seen: str = ""
    exit_code: int | None = None
    ended_by_itself: bool = False
    log_excerpt: list[str] = field(default_factory=list)


def _files_state(root: Path) -> dict[str, int]:
    """Path → mtime of everything under ``root`` (entries that vanish while walking are skipped)."""
    state: dict[str, int] = {}
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(directory, name)
            try:
                state[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue
    return state


def _wait_change(root: Path, timeout_s: float, *, names_only: bool) -> str:
    """Poll ``root`` until a file is added (or, unless ``names_only``, modified); returns what changed."""
    before = _files_state(root)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _files_state(root)
        added = [p for p in now if p not in before]
        if added:
            tmp = [p for p in added if "tmp_insert" in p]
            return f"new {Path((tmp or added)[0]).name}"
        if not names_only:
            changed = [p for p, m in now.items() if before.get(p) != m]
            if changed:
                return f"write to {Path(changed[0]).name}"
        time.sleep(0.01)
    return "no change seen"


def _error_lines(run: CoachRun) -> list[str]:
    return run.log_lines("Traceback", "ERROR", "failed", "Error", limit=6)


def test_ten_restarts_lose_nothing(migrated_stack: PlatformSettings, tmp_path: Path) -> None:
    settings = migrated_stack
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    home = workdir / RELATIVE_HOME
    ingestion, api, tmetrics, fmetrics = free_ports(4)
    ports = {"ingestion": ingestion, "api": api, "transcription_metrics": tmetrics, "feedback_metrics": fmetrics}
    env = coach_env(
        ports,
        {
            "COACH_FLOWS_EPOCH_INTERVAL_S": "1",
            "COACH_TRANSCRIPTION_BATCH_MAX_MESSAGES": "2",
            # static membership: a restarted worker takes its partitions back at once, so "mid-batch" is real
            "COACH_TRANSCRIPTION_WORKER_GROUP_INSTANCE_ID": f"restart-drill-{uuid.uuid4().hex[:6]}",
        },
    )
    migrated = coach_cli("migrate", "--no-topics", "--no-postgres", "--no-cdc", cwd=workdir, env=env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert (home / "chdb").is_dir(), f"chDB not under the relative home: {sorted(p.name for p in home.iterdir())}"

    user = f"restart-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        token = create_api_key(conn, user, "learner")
    admin = coach_cli("keys", "create", "--user", f"admin-{user}", "--role", "admin", cwd=workdir, env=env)
    assert admin.returncode == 0, admin.stdout + admin.stderr
    admin_token = admin.stdout.strip().splitlines()[-1]

    accepted: list[str] = []
    starts: list[Start] = []
    tail = TopicTail(settings.bootstrap_servers, [TRANSCRIPTS.name])
    run: CoachRun | None = None
    clip_number = 0
    failed: dict[str, Any] = {}

    def upload_some(run: CoachRun, start: Start, count: int) -> set[str]:
        nonlocal clip_number
        ids: set[str] = set()
        for _ in range(count):
            clip = JFK if clip_number % 4 == 0 else HOTWORDS
            clip_number += 1
            try:
                response = upload(run.ingestion, token, clip)
            except httpx.HTTPError as exc:
                start.upload_errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if response.status_code == 202:
                sid = response.json()["submission_id"]
                accepted.append(sid)
                ids.add(sid)
                start.uploads += 1
            else:
                start.upload_errors.append(f"{response.status_code} {response.text[:200]}")
        return ids

    def transcribed(ids: set[str], timeout_s: float) -> bool:
        return tail.poll_until(lambda seen: bool(ids & {r.get("submission_id") for r in seen}), timeout_s)

    try:
        for number, (moment, sig) in enumerate(SCHEDULE, start=1):
            start = Start(number, moment, sig.name)
            starts.append(start)
            run = CoachRun(workdir, env, ports, tmp_path / f"run-{number:02d}.log")
            start.ready_s = run.wait_ready(READY_TIMEOUT_S)
            if start.ready_s is None:
                start.ended_by_itself = not run.alive()
                start.log_excerpt = [f"last /readyz: {run.last_readyz}", *(_error_lines(run) or [run.log_tail(600)])]
                start.exit_code = run.stop(signal.SIGKILL)
                continue
            if moment == "idle":
                time.sleep(2)
                start.moment_seen = "idle"
            elif moment == "mid-batch":
                ids = upload_some(run, start, 3)
                start.moment_seen = (
                    "first transcript of the batch out" if ids and transcribed(ids, 90) else "no transcript yet"
                )
            else:
                ids = upload_some(run, start, 1)
                if ids and transcribed(ids, 90):
                    if moment == "snapshot":
                        start.moment_seen = _wait_change(home / "flows" / "recovery", 20, names_only=False)
                    else:
                        start.moment_seen = _wait_change(home / "chdb", 30, names_only=True)
                else:
                    start.moment_seen = "not transcribed in 90 s"
            if not run.alive():
                start.ended_by_itself = True
                start.log_excerpt = _error_lines(run)
            start.exit_code = run.stop(sig, SIGTERM_EXIT_S)
            if sig == signal.SIGTERM and start.exit_code != 0:
                start.log_excerpt = start.log_excerpt or _error_lines(run) or [run.log_tail(600)]
            assert run.left_behind() == [], f"start {number}: processes left behind"

        # the last, clean start: everything accepted is drained
        final = Start(len(SCHEDULE) + 1, "clean (drain)", "SIGTERM")
        starts.append(final)
        run = CoachRun(workdir, env, ports, tmp_path / "run-final.log")
        final.ready_s = run.wait_ready(READY_TIMEOUT_S)
        final.uploads = len(upload_some(run, final, 1)) if final.ready_s is not None else 0
        details = _drain(run, settings, admin_token, accepted) if final.ready_s is not None else {}
        failed.update({sid: d.get("failure_reason") for sid, d in details.items() if d and d.get("status") == "failed"})
        complete = sum(1 for d in details.values() if d and d.get("status") != "failed")
        final.moment_seen = f"{complete} of {len(accepted)} complete in the API, {len(failed)} failed"
        if not run.alive():
            final.ended_by_itself = True
            final.log_excerpt = _error_lines(run)
        final.exit_code = run.stop(signal.SIGTERM, SIGTERM_EXIT_S)
        if final.exit_code != 0:
            final.log_excerpt = final.log_excerpt or _error_lines(run) or [run.log_tail(600)]
        tail.poll(2)
    finally:
        if run is not None:
            run.kill()
        tail.close()

    _print_starts(starts)
    # every start ready, none ended by itself, every SIGTERM a clean exit
    problems = [
        f"start {s.number} ({s.moment}, {s.sig}): "
        + ("not ready" if s.ready_s is None else "")
        + (" ended by itself" if s.ended_by_itself else "")
        + (f" exit {s.exit_code} on SIGTERM" if s.sig == "SIGTERM" and s.exit_code != 0 else "")
        + (f" upload errors {s.upload_errors}" if s.upload_errors else "")
        + (f" log: {s.log_excerpt}" if s.log_excerpt else "")
        for s in starts
        if s.ready_s is None or s.ended_by_itself or s.upload_errors or (s.sig == "SIGTERM" and s.exit_code != 0)
    ]

    # the stores, read after the last run stopped
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        transcripts = Counter(
            str(r[0])
            for r in conn.execute(
                "SELECT submission_id FROM transcripts WHERE submission_id = ANY(%s::uuid[])", (accepted,)
            )
        )
        feedback = Counter(
            str(r[0])
            for r in conn.execute(
                "SELECT submission_id FROM feedback WHERE submission_id = ANY(%s::uuid[])", (accepted,)
            )
        )
    metrics_rows = query_chdb(
        home / "chdb",
        "SELECT toString(submission_id), count() FROM coach.submission_metrics FINAL GROUP BY submission_id",
    )
    metrics = {sid: int(n) for sid, n in metrics_rows}
    topic_copies = Counter(
        r["submission_id"] for r in tail.records if str(r.get("submission_id")) in set(accepted) and "payload" in r
    )
    print(
        f"accepted {len(accepted)}; transcripts {len(transcripts)}; feedback {len(feedback)}; metrics rows "
        f"{sum(metrics.get(s, 0) for s in accepted)}; transcript events on the topic (at-least-once) "
        f"{sum(topic_copies.values())} for {len(topic_copies)} submissions"
    )
    problems += [f"{sid}: failed in the API: {str(reason)[:300]}" for sid, reason in failed.items()]
    for sid in accepted:
        for what, got in (
            ("transcript", transcripts[sid]),
            ("feedback", feedback[sid]),
            ("metrics row", metrics.get(sid, 0)),
        ):
            if got != 1:
                problems.append(f"{sid}: {got} {what}(s)")
    assert not problems, "\n".join(problems)


def _drain(run: CoachRun, settings: PlatformSettings, admin_token: str, accepted: list[str]) -> dict[str, Any]:
    """Wait until every accepted submission has transcript, feedback and metrics in the progress API (or is
    marked failed there); returns the API's detail of each (None: not complete in time)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    details: dict[str, Any] = {sid: None for sid in accepted}
    headers = {"Authorization": f"Bearer {admin_token}"}
    while time.monotonic() < deadline and run.alive():
        for sid in [s for s, d in details.items() if d is None]:
            try:
                response = httpx.get(f"{run.api}/v1/submissions/{sid}", headers=headers, timeout=10)
            except httpx.HTTPError:
                continue
            body = response.json() if response.status_code == 200 else {}
            if body.get("status") == "failed" or (
                body.get("transcript") and body.get("feedback") and body.get("metrics")
            ):
                details[sid] = body  # complete, or failed for good (a dead letter): nothing more will come
        if all(details.values()):
            break
        time.sleep(1)
    return details


def _print_starts(starts: list[Start]) -> None:
    print("\nrestart drill: starts tried / ready")
    print(f"{'#':>3}  {'moment':<14} {'signal':<8} {'ready s':>8} {'uploads':>7}  {'exit':>5}  moment seen / notes")
    for s in starts:
        ready = f"{s.ready_s:.1f}" if s.ready_s is not None else "NO"
        notes = s.moment_seen + (" ENDED BY ITSELF" if s.ended_by_itself else "")
        notes += f" upload errors: {s.upload_errors}" if s.upload_errors else ""
        print(f"{s.number:>3}  {s.moment:<14} {s.sig:<8} {ready:>8} {s.uploads:>7}  {s.exit_code!s:>5}  {notes}")
        for line in s.log_excerpt:
            print(f"       | {line}")
    print(f"starts tried {len(starts)} / ready {sum(1 for s in starts if s.ready_s is not None)}")
