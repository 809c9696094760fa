"""The metric tables on embedded chDB: idempotent sink inserts and the replay's table swap.

chDB opens one data directory per process and the test session may already hold another, so the checks run in a
subprocess on a fresh directory and report back as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]

PRELUDE = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime, timedelta
    from clickhouse import SQL_DIR
    from flows.clickhouse_sink import ClickHouseSink
    from flows.records import SourceMessage, score_batch, submission_row
    from flows.replay import drop_old_tables, rollback, swap_in
    from flows.synthetic import synthetic_transcript
    from flows.tables import SUBMISSION_COLUMNS
    from runtime.clickhouse import get_clickhouse_client
    from runtime.settings import PlatformSettings
    from runtime.sql_migrations import apply_clickhouse
    from schemas.registry import encode_event

    client = get_clickhouse_client(PlatformSettings(home=sys.argv[1], clickhouse_url=f"chdb://{sys.argv[1]}/chdb"))
    out = {}
    at = datetime(2024, 3, 5, 10, tzinfo=UTC)
    def message(i):
        value = encode_event(synthetic_transcript("u1", at + timedelta(hours=i), words=20))
        return SourceMessage("speech.transcripts.v1", 0, i, b"u1", value)
    scored = score_batch([message(i) for i in range(3)], pause_threshold_s=0.25)
    rows = [(submission_row(s, at), f"speech.transcripts.v1:0:{s.source_offset}") for s in scored]
    """
)
"""What both scripts start with: a chDB client on the directory given, and three scored transcripts as sink rows."""

SCRIPT = PRELUDE + textwrap.dedent(
    """
    apply_clickhouse(client, SQL_DIR, "coach")
    client.command("SYSTEM STOP MERGES coach.submission_metrics")  # so only the tokens can drop duplicates
    sink = ClickHouseSink("coach.submission_metrics", SUBMISSION_COLUMNS, client_factory=lambda: client, batch_rows=2)
    part = sink.build_part("submission_metrics_out", "coach.submission_metrics#0", None)
    part.write_batch(rows)      # one insert of 2 rows (batch size), 1 row buffered
    part.snapshot()             # the epoch boundary flushes the buffered row
    part.write_batch(rows)      # the same batches again (a restart replaying the epoch): same tokens
    part.close()
    count = "SELECT count() FROM coach.{} {}"
    out["raw_after_replayed_batches"] = client.query(count.format("submission_metrics", "")).result_rows[0][0]
    # the sink's column-oriented insert with DateTime64 ticks stores what a plain row insert of datetimes stores
    client.command("CREATE TABLE coach.sink_reference AS coach.submission_metrics")
    client.insert("coach.sink_reference", [row for row, _ in rows], column_names=list(SUBMISSION_COLUMNS))
    every = "SELECT * FROM coach.{} FINAL ORDER BY source_offset"
    stored = client.query(every.format("submission_metrics")).result_rows
    out["sink_rows_equal_plain_insert"] = stored == client.query(every.format("sink_reference")).result_rows
    out["sink_rows_read_back"] = [str(row[SUBMISSION_COLUMNS.index("occurred_at")]) for row in stored]
    client.command("DROP TABLE coach.sink_reference")
    # the same natural key written with another position (no token match) collapses in ReplacingMergeTree
    later = submission_row(scored[0], at + timedelta(days=1))
    part = sink.build_part("submission_metrics_out", "coach.submission_metrics#0", None)
    part.write_batch([(later, "speech.transcripts.v1:0:99")])
    part.close()
    out["raw_after_rewrite"] = client.query(count.format("submission_metrics", "")).result_rows[0][0]
    out["final_after_rewrite"] = client.query(count.format("submission_metrics", "FINAL")).result_rows[0][0]

    for table in ("submission_metrics", "learner_metrics_windows", "late_events"):
        client.command(f"CREATE TABLE coach.{table}_v5 AS coach.{table}")
    client.insert("coach.submission_metrics_v5", [submission_row(scored[1], at)], column_names=list(SUBMISSION_COLUMNS))
    out["swap"] = swap_in(client, "coach", 5)
    out["live_after_swap"] = client.query(count.format("submission_metrics", "FINAL")).result_rows[0][0]
    out["kept_after_swap"] = client.query(count.format("submission_metrics_before_v5", "FINAL")).result_rows[0][0]
    rollback(client, "coach", 5)
    out["live_after_rollback"] = client.query(count.format("submission_metrics", "FINAL")).result_rows[0][0]
    rollback(client, "coach", 5)
    out["dropped"] = drop_old_tables(client, "coach", 5)
    out["live_after_drop"] = client.query(count.format("submission_metrics", "FINAL")).result_rows[0][0]
    tables = client.query("SELECT name FROM system.tables WHERE database = 'coach'").result_rows
    out["tables"] = sorted(r[0] for r in tables)
    print(json.dumps(out))
    """
)


def test_sink_dedup_tokens_replacing_merge_tree_and_swap(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["raw_after_replayed_batches"] == 3  # the replayed batches were dropped by their tokens
    assert out["sink_rows_equal_plain_insert"] is True
    assert out["sink_rows_read_back"] == ["2024-03-05 10:00:00", "2024-03-05 11:00:00", "2024-03-05 12:00:00"]
    assert (out["raw_after_rewrite"], out["final_after_rewrite"]) == (4, 3)
    assert out["swap"] == ["exchange", "exchange", "exchange"]  # chDB's Atomic database supports EXCHANGE
    assert (out["live_after_swap"], out["kept_after_swap"]) == (1, 3)
    assert out["live_after_rollback"] == 3
    assert out["dropped"] == [
        "submission_metrics_before_v5",
        "learner_metrics_windows_before_v5",
        "late_events_before_v5",
    ]
    assert out["live_after_drop"] == 1
    assert "submission_metrics_before_v5" not in out["tables"] and "submission_metrics_v5" not in out["tables"]


WRITE_THROUGH_SCRIPT = PRELUDE + textwrap.dedent(
    """
    count = "SELECT count() FROM {}.submission_metrics {}"
    per_key = (
        "SELECT max(c) FROM (SELECT count() AS c FROM {}.submission_metrics FINAL GROUP BY user_id, submission_id)"
    )
    for database, write_through in (("through", True), ("buffered", False)):
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        apply_clickhouse(client, SQL_DIR, database)
        client.command(f"SYSTEM STOP MERGES {database}.submission_metrics")  # duplicates stay until read
        table = f"{database}.submission_metrics"
        sink = ClickHouseSink(table, SUBMISSION_COLUMNS, client_factory=lambda: client, write_through=write_through)
        part = sink.build_part("submission_metrics_out", f"{table}#0", None)
        seen = []
        part.write_batch(rows[:2])
        seen.append(client.query(count.format(database, "")).result_rows[0][0])
        part.write_batch(rows[2:])
        seen.append(client.query(count.format(database, "")).result_rows[0][0])
        part.snapshot()
        seen.append(client.query(count.format(database, "")).result_rows[0][0])
        # a crash before that snapshot was committed: the resumed flow writes the epoch's rows again, grouped into
        # other batches than before (other deduplication tokens), and the rows collapse on their natural key
        resumed = sink.build_part("submission_metrics_out", f"{table}#0", None)
        resumed.write_batch([rows[0]])
        resumed.write_batch(rows[1:])
        resumed.close()
        seen.append(client.query(count.format(database, "")).result_rows[0][0])
        out[database] = {
            "raw": seen,
            "final": client.query(count.format(database, "FINAL")).result_rows[0][0],
            "per_key": client.query(per_key.format(database)).result_rows[0][0],
        }
    print(json.dumps(out))
    """
)


def test_write_through_sink_inserts_before_the_snapshot_and_rewrites_collapse(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WRITE_THROUGH_SCRIPT, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # write-through: each batch is in ClickHouse when write_batch returns, before any snapshot; the re-written
    # batches (1 + 2 rows, other tokens than 2 + 1) are stored again but read back as one row per key with FINAL
    assert out["through"] == {"raw": [2, 3, 3, 6], "final": 3, "per_key": 1}
    # buffered (replays): nothing before the epoch boundary, everything at it; the re-written epoch is one insert
    # of the same rows again, dropped by its token
    assert out["buffered"] == {"raw": [0, 0, 3, 3], "final": 3, "per_key": 1}


def test_only_the_live_metric_flow_writes_through() -> None:
    from flows.clickhouse_sink import ClickHouseSink
    from flows.dataflow import build_metrics_flow
    from flows.settings import FlowSettings
    from flows.tables import TableNames
    from runtime.settings import PlatformSettings

    def sinks(step: object) -> list[ClickHouseSink]:
        found = [sink] if isinstance(sink := getattr(step, "sink", None), ClickHouseSink) else []
        for sub in getattr(step, "substeps", ()):
            found += sinks(sub)
        return found

    platform, tables = PlatformSettings(), TableNames("coach")
    live = sinks(build_metrics_flow(FlowSettings(), platform, tables))
    assert len(live) == 3 and all(sink.write_through for sink in live)
    replay = sinks(build_metrics_flow(FlowSettings(), platform, tables, replay=True))
    assert len(replay) == 3 and not any(sink.write_through for sink in replay)
    off = sinks(build_metrics_flow(FlowSettings(sink_write_through=False), platform, tables))
    assert len(off) == 3 and not any(sink.write_through for sink in off)


def test_datetime64_ticks_match_clickhouse_connect() -> None:
    from datetime import UTC, datetime, timedelta

    from clickhouse_connect.datatypes.registry import get_from_name

    from flows.clickhouse_sink import datetime64_ticks

    values = [
        datetime(2024, 3, 5, 10, 0, 0, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before the epoch: rounded down
        datetime(2026, 11, 22, 3, 4, 5, tzinfo=UTC) + timedelta(microseconds=1),
        datetime(2100, 1, 1, tzinfo=UTC),
    ]
    for precision in (0, 3, 6, 9):
        kind = get_from_name(f"DateTime64({precision}, 'UTC')")
        for value in values:
            assert datetime64_ticks(value, precision) == kind._datetime64_ticks(value), (precision, value)
