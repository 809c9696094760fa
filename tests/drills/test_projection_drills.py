"""Fault drills of the projections: a killed projector, a restarted PostgreSQL, a crashed Kafka Connect.

Each drill breaks a real engine of the local stack (the stack's own engine stop/start, or SIGKILL) while work flows,
then checks that nothing was lost or duplicated in what consumers see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from projections.cdc_dedup import change_key, dedup_changes
from projections.debezium import cdc_status, cdc_topic
from projections.learners import LearnerProfile, upsert_learner
from projections.projector import ProjectorSettings, run_projector
from runtime.kafka import EventProducer
from runtime.settings import PlatformSettings
from schemas import EventEnvelope
from stack.process import pid_alive
from stack.settings import StackSettings
from stack.supervisor import Supervisor
from tests.projection_fixtures import (
    Record,
    create_database,
    drop_database,
    dump_read_models,
    read_topic,
    recordings,
    scalar,
    user_id,
    wait_for,
)

pytestmark = pytest.mark.drill

REPO_ROOT = Path(__file__).resolve().parents[2]


def produce(settings: PlatformSettings, events: list[tuple[str, EventEnvelope]]) -> None:
    producer = EventProducer(settings, client_id="test-drill")
    for topic, event in events:
        producer.produce(topic, event)
    assert producer.flush(60) == 0


def timeline_count(settings: PlatformSettings, users: list[str]) -> int:
    return int(
        scalar(settings.postgres_dsn, "SELECT count(*) FROM submission_timeline WHERE user_id = ANY(%s)", (users,)) or 0
    )


# --- the projector is killed mid-batch ----------------------------------------------------------------------


@pytest.fixture
def two_databases(projections_platform: PlatformSettings) -> Iterator[tuple[PlatformSettings, PlatformSettings]]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"drill_{suffix}_killed", f"drill_{suffix}_clean")
    try:
        yield create_database(projections_platform, names[0]), create_database(projections_platform, names[1])
    finally:
        for name in names:
            drop_database(projections_platform, name)


def test_killed_projector_resumes_to_the_projection_of_a_clean_run(
    projections_platform: PlatformSettings, two_databases: tuple[PlatformSettings, PlatformSettings], tmp_path: Path
) -> None:
    killed_db, clean_db = two_databases
    users = [user_id("kill") for _ in range(8)]
    first, second = recordings(users, 25), recordings(users, 10, start=25)
    expected = 3 * 8 * 35  # timeline rows: received, transcribed, feedback per recording
    produce(projections_platform, first)

    group = f"drill-killed-{uuid.uuid4().hex[:6]}"
    env = dict(
        os.environ,
        COACH_PG_DATABASE=killed_db.pg_database,
        COACH_PROJECTOR_GROUP_ID=group,
        COACH_PROJECTOR_BATCH_MAX_MESSAGES="25",  # many small transactions: the kill lands inside one
    )
    command = [sys.executable, "-m", "projections.projector"]
    log = (tmp_path / "projector.log").open("ab")
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: timeline_count(killed_db, users) > 0, what="killed projector made progress")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        projected_before_kill = timeline_count(killed_db, users)
        produce(projections_platform, second)  # more work while it is down

        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(
            lambda: timeline_count(killed_db, users) == expected, what="restarted projector caught up", timeout_s=180
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "projector.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

    stop = threading.Event()
    clean = threading.Thread(
        target=run_projector,
        args=(stop, ProjectorSettings(group_id=f"drill-clean-{uuid.uuid4().hex[:6]}"), clean_db),
        daemon=True,
    )
    clean.start()
    try:
        wait_for(lambda: timeline_count(clean_db, users) == expected, what="clean projector caught up", timeout_s=180)
    finally:
        stop.set()
        clean.join(30)

    assert 0 < projected_before_kill < expected
    killed_tables = dump_read_models(killed_db.postgres_dsn, users)
    clean_tables = dump_read_models(clean_db.postgres_dsn, users)
    assert {table: len(rows) for table, rows in killed_tables.items()} == {
        "submissions": 8 * 35,
        "submission_timeline": expected,
        "transcripts": 8 * 35,
        "feedback": 8 * 35,
    }
    for table in clean_tables:
        assert killed_tables[table] == clean_tables[table], table


# --- PostgreSQL restarts while events flow ------------------------------------------------------------------


def test_postgres_restart_loses_no_projection_and_cdc_resumes_from_its_slot(
    projections_platform: PlatformSettings,
) -> None:
    users = [user_id("pgrestart") for _ in range(4)]
    events = recordings(users, 40)
    expected = 3 * 4 * 40
    stop = threading.Event()
    projector = threading.Thread(
        target=run_projector, args=(stop, ProjectorSettings(batch_max_wait_ms=50), projections_platform), daemon=True
    )
    projector.start()
    producer = EventProducer(projections_platform, client_id="test-drill-pg")
    half = len(events) // 2

    def flow(part: list[tuple[str, EventEnvelope]]) -> None:
        for topic, event in part:
            producer.produce(topic, event)
            time.sleep(0.005)
        producer.flush(60)

    postgres = Supervisor(StackSettings()).engine("postgres")
    try:
        sender = threading.Thread(target=flow, args=(events[:half],))
        sender.start()
        wait_for(lambda: timeline_count(projections_platform, users) > 0, what="projection under way")
        assert postgres.stop()
        flow(events[half:])  # events keep arriving while PostgreSQL is down
        sender.join()
        postgres.start()
        wait_for(
            lambda: timeline_count(projections_platform, users) == expected, what="every event projected", timeout_s=180
        )
    finally:
        stop.set()
        projector.join(60)
        if postgres.pid() is None:
            postgres.start()

    with psycopg.connect(projections_platform.postgres_dsn, autocommit=True) as conn:
        statuses = conn.execute(
            "SELECT status, count(*) FROM submissions WHERE user_id = ANY(%s) GROUP BY status", (users,)
        ).fetchall()
        submission_ids = {
            str(row[0])
            for row in conn.execute("SELECT submission_id FROM submissions WHERE user_id = ANY(%s)", (users,))
        }
        marker = user_id("marker")
        upsert_learner(conn, LearnerProfile(user_id=marker, cohort="after-restart"))
    assert statuses == [("feedback", 4 * 40)]

    # Debezium resumes from its replication slot: a change made after the restart arrives, and every submission
    # (most written after the restart) reaches the CDC topic with its final status.
    wait_for(
        lambda: (s := cdc_status(projections_platform))["state"] == "RUNNING" and s["tasks"] == ["RUNNING"],
        what="connector runs",
    )
    read_topic(
        cdc_topic("learners"),
        lambda rs: any((r.value or {}).get("after", {}).get("user_id") == marker for r in rs),
        settings=projections_platform,
        timeout_s=120,
    )

    def all_final(records: list[Record]) -> bool:
        final = {
            r.value["after"]["submission_id"]
            for r in records
            if r.value and r.value.get("after") and r.value["after"]["status"] == "feedback"
        }
        return submission_ids <= final

    read_topic(cdc_topic("submissions"), all_final, settings=projections_platform, timeout_s=120)


# --- Kafka Connect crashes: replayed change events are absorbed by deduplication ----------------------------


def test_connect_crash_replays_are_absorbed_by_lsn_deduplication(projections_platform: PlatformSettings) -> None:
    learners = [user_id("dedup") for _ in range(5)]
    changes = 60
    with psycopg.connect(projections_platform.postgres_dsn, autocommit=True) as conn:
        for i in range(changes):  # 5 inserts, then updates; one transaction each
            upsert_learner(conn, LearnerProfile(user_id=learners[i % 5], cohort=f"c{i}"))

    def learner_of(record: Record) -> str | None:
        image = (record.value or {}).get("after") or (record.value or {}).get("before") or {}
        return image.get("user_id")

    # Kill Connect as soon as the changes are on the topic, inside its 5 s offset-flush interval: the restarted task
    # resumes from the last flushed LSN and produces (some of) them again.
    read_topic(
        cdc_topic("learners"),
        lambda rs: sum(learner_of(r) in learners for r in rs) >= changes,
        settings=projections_platform,
        timeout_s=120,
    )
    connect = Supervisor(StackSettings()).engine("connect")
    pid = connect.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)  # no graceful shutdown: source offsets of the last seconds are not flushed
    wait_for(lambda: not pid_alive(pid), what="Kafka Connect dead")
    connect.clear_pid_file()
    connect.start()
    wait_for(
        lambda: (s := cdc_status(projections_platform))["state"] == "RUNNING" and s["tasks"] == ["RUNNING"],
        what="connector running again",
        timeout_s=180,
    )
    marker = user_id("marker")
    with psycopg.connect(projections_platform.postgres_dsn, autocommit=True) as conn:
        upsert_learner(conn, LearnerProfile(user_id=marker, cohort="after-crash"))

    records = read_topic(
        cdc_topic("learners"),
        lambda rs: any(learner_of(r) == marker for r in rs),
        settings=projections_platform,
        timeout_s=180,
    )
    ours = [(r.key, r.value) for r in records if learner_of(r) in learners]
    deduped = list(dedup_changes(ours))
    keys = [change_key(key, value) for key, value in deduped]
    assert len(keys) == len(set(keys)), "a change survived deduplication twice"
    assert len(deduped) == changes  # each change exactly once, none lost
    for n, learner in enumerate(learners):
        cohorts = [v["after"]["cohort"] for _, v in deduped if v["after"]["user_id"] == learner]
        assert cohorts == [f"c{i}" for i in range(n, changes, 5)]  # in commit order
    print(f"raw change events {len(ours)}, after deduplication {len(deduped)}")  # replays seen in this run
